"""``CITYEDGE_SECTION__KEY=value`` environment overrides, each remembered by its variable.

pydantic-settings reads them (agent/config/envsource.py): its ``EnvSettingsSource`` (prefix
``CITYEDGE_``, ``__`` for nesting, any case) finds the field a variable names, explodes the
name into nested data (``CITYEDGE_GATEWAY__LOG_LEVEL`` sets ``gateway.log_level``) and decodes
the JSON of a value that fills a table or an array (``CITYEDGE_METRICS='{"port": 9200}'``).
Other ``CITYEDGE_*`` variables (``CITYEDGE_CONFIG``, ``CITYEDGE_EVENT_LOOP``...) name no field
and are not config.

What this module adds, each naming the variable: the source is given one variable at a time,
so every value is remembered by its variable (errors in it are reported there by
agent/config/origins.py) and malformed JSON is an issue, not a ``SettingsError`` traceback.
Refused before the source sees them: an unknown section, which it would skip silently ("did you
mean CITYEDGE_GATEWAY__LOG_LEVEL?"), and an array entry by index (arrays of tables are set
whole or in a conf.d drop-in). Refused after: a variable that sets inside a value another one
sets whole, which it would drop unsaid. Values stay text (a shell has nothing else):
``CITYEDGE_METRICS__PORT=9200`` is a number once the loader validates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config.gateway import GatewayConfig
from drivers.core.errors import ConfigIssue
from drivers.core.issues import did_you_mean

PREFIX = "CITYEDGE_"
NESTED = "__"
SECTIONS = tuple(GatewayConfig.model_fields)


@dataclass
class Overlay:
    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)  # path -> variable
    issues: list[ConfigIssue] = field(default_factory=list)


def overlay(environ: Mapping[str, str]) -> Overlay:
    out = Overlay()
    for var in sorted(environ):  # a whole value before the variables that set inside it
        if not var.upper().startswith(PREFIX):
            continue
        parts = var[len(PREFIX) :].split(NESTED)
        path = tuple(p.lower() for p in parts)
        if len(parts) == 1 and path[0] not in SECTIONS:
            continue  # not a config variable
        where = f"${var}"
        if path[0] not in SECTIONS:
            hint = did_you_mean(path[0], SECTIONS)
            if hint:
                better = NESTED.join([hint.split("'")[1].upper(), *parts[1:]])
                hint = f" (did you mean {PREFIX}{better}?)"
            out.issues.append(
                ConfigIssue(
                    where,
                    ".".join(path),
                    f"unknown section '{parts[0]}'{hint}; sections: {', '.join(SECTIONS)}",
                )
            )
            continue
        if any(not p for p in path):
            out.issues.append(ConfigIssue(where, "", "empty name between '__' separators"))
            continue
        if any(p.isdigit() for p in path):
            out.issues.append(
                ConfigIssue(
                    where,
                    ".".join(path),
                    "array entries cannot be set one by one from the environment: set the "
                    f"whole array as JSON ({PREFIX}{parts[0]}='[...]') or use a conf.d drop-in",
                )
            )
            continue
        from pydantic_settings import SettingsError  # imported only when a variable asks

        from agent.config.envsource import VariablesSource

        text = environ[var]
        source = VariablesSource({var: text})
        try:
            nested = source()
            # a field taking other values too (a pair or nothing) is given undecodable text
            bad_json = source.json_error is not None and text.lstrip()[:1] in ("[", "{")
        except SettingsError as exc:
            if source.json_error is None:
                out.issues.append(ConfigIssue(where, ".".join(path), str(exc)))
                continue
            bad_json = True
        if bad_json:
            error = f"not valid JSON: {source.json_error}"
            out.issues.append(ConfigIssue(where, ".".join(path), error))
            continue
        keys, value = _leaf(nested, len(path))
        clash = _put(out.data, keys, value)
        if clash is not None:
            out.issues.append(
                ConfigIssue(
                    where,
                    ".".join(path),
                    f"{'.'.join(clash)} is set as a whole by ${out.origins.get(clash, '?')}",
                )
            )
            continue
        out.origins[tuple(k.lower() for k in keys)] = var
    return out


def _leaf(nested: Mapping[str, Any], depth: int) -> tuple[tuple[str, ...], Any]:
    """The path (field names, as the source spelled them) and value of one variable's data."""
    keys: list[str] = []
    node: Any = nested
    for _ in range(depth):
        ((key, node),) = node.items()
        keys.append(key)
    return tuple(keys), node


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> tuple[str, ...] | None:
    """Set ``value`` at ``path``; the prefix that holds a non-table value, if one does."""
    node = data
    for i, key in enumerate(path[:-1]):
        nxt = node.setdefault(key, {})
        if not isinstance(nxt, dict):
            return path[: i + 1]
        node = nxt
    old = node.get(path[-1])
    if isinstance(old, dict) and isinstance(value, dict):
        merge(old, value)
    else:
        node[path[-1]] = value
    return None


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Deep-merge ``extra`` into ``base``: tables merge key by key, anything else replaces."""
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
