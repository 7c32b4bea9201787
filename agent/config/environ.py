"""``CITYEDGE_SECTION__KEY=value`` environment overrides, each remembered by its variable.

A variable is a config override when its name has ``__`` after the prefix (nesting, any case:
``CITYEDGE_GATEWAY__LOG_LEVEL`` sets ``gateway.log_level``), or when it names a whole section
(``CITYEDGE_METRICS='{"port": 9200}'``). Other ``CITYEDGE_*`` variables (``CITYEDGE_CONFIG``,
``CITYEDGE_EVENT_LOOP``...) are not config and are left alone. Refused, each naming the
variable: an unknown section ("did you mean CITYEDGE_GATEWAY__LOG_LEVEL?"), a value starting
with ``[`` or ``{`` that is not JSON, an array entry by index (arrays of tables are set whole
or in a conf.d drop-in), and a variable that sets inside a value another one sets whole.

Values stay text (a shell has nothing else): ``CITYEDGE_METRICS__PORT=9200`` is a number once
validated. Errors in a value are reported at the variable by ``agent/config/origins.py``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.core.errors import ConfigIssue
from drivers.core.issues import did_you_mean

PREFIX = "CITYEDGE_"


@dataclass
class Overlay:
    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)  # path -> variable
    issues: list[ConfigIssue] = field(default_factory=list)


def overlay(environ: Mapping[str, str], sections: Collection[str]) -> Overlay:
    out = Overlay()
    for var in sorted(environ):
        if not var.upper().startswith(PREFIX):
            continue
        parts = var[len(PREFIX) :].split("__")
        path = tuple(p.lower() for p in parts)
        if len(parts) == 1 and path[0] not in sections:
            continue  # not a config variable
        where = f"${var}"
        if path[0] not in sections:
            hint = did_you_mean(path[0], sections)
            if hint:
                better = "__".join([hint.split("'")[1].upper(), *parts[1:]])
                hint = f" (did you mean {PREFIX}{better}?)"
            out.issues.append(
                ConfigIssue(
                    where,
                    ".".join(path),
                    f"unknown section '{parts[0]}'{hint}; sections: {', '.join(sections)}",
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
        value: Any = environ[var]
        if value.lstrip()[:1] in ("[", "{"):
            try:
                value = json.loads(value)
            except ValueError as exc:
                out.issues.append(ConfigIssue(where, ".".join(path), f"not valid JSON: {exc}"))
                continue
        clash = _put(out.data, path, value)
        if clash is not None:
            out.issues.append(
                ConfigIssue(
                    where,
                    ".".join(path),
                    f"{'.'.join(clash)} is set as a whole by ${out.origins.get(clash, '?')}",
                )
            )
            continue
        out.origins[path] = var
    return out


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
