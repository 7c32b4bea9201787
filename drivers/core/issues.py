"""pydantic validation errors as a technician reads them (gateway file and profiles alike).

- Locations lose pydantic's union tags (``outputs[0].mqtt.port`` is ``outputs[0].port``).
- An unknown key, or a value outside a set of choices, names the closest known one
  ("did you mean 'port'?").
- Strict types. TOML writes numbers, booleans and strings differently, so a string where a
  number belongs (``port = "9108"``), a number for a boolean (``enabled = 1``) or a fraction
  for a whole number is a mistake even where pydantic would coerce it. A file is therefore
  validated a second time in pydantic's strict JSON mode (which still takes arrays for tuples,
  values for enums and integers for floats), and the type errors only that pass finds are
  reported. Environment variables are text by nature and are not held to this.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from inspect import isclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]
_STRICT_TYPES = frozenset({"int_type", "float_type", "bool_type", "int_from_float"})


@dataclass(frozen=True, slots=True)
class Problem:
    loc: Loc
    message: str


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, else ``""``."""
    if not isinstance(word, str):
        return ""
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not close:
        lower = {n.lower(): n for n in names}
        close = [lower[word.lower()]] if word.lower() in lower else []
    return f" (did you mean '{close[0]}'?)" if close and close[0] != word else ""


def _unwrap(ann: Any) -> Any:
    while True:
        origin = get_origin(ann)
        if origin is Annotated:
            ann = get_args(ann)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(ann) if a is not type(None)]
            if len(members) == 1:
                ann = members[0]
                continue
        return ann


def _tag_member(ann: Any, part: object) -> Any:
    """The member of a union that pydantic's location tag ``part`` names, else None."""
    for m in get_args(ann):
        if isclass(m) and issubclass(m, BaseModel):
            tag = m.model_fields.get("type")
            literal = tag is not None and get_origin(tag.annotation) is Literal
            if literal and tag is not None and part in get_args(tag.annotation):
                return m
            if m.__name__ == part:
                return m
        elif getattr(m, "__name__", None) == part:
            return m
    return None


def walk(model: type[BaseModel], loc: Sequence[str | int]) -> tuple[Loc, Any]:
    """``loc`` without union tags, and the annotation it ends at (None past the schema)."""
    out: list[str | int] = []
    ann: Any = model
    for part in loc:
        if ann is None:
            out.append(part)
            continue
        ann = _unwrap(ann)
        origin = get_origin(ann)
        if origin in (Union, types.UnionType):
            member = _tag_member(ann, part)
            if member is not None:
                ann = member
                continue
        out.append(part)
        if isclass(ann) and issubclass(ann, BaseModel):
            f = ann.model_fields.get(str(part))
            ann = f.annotation if f is not None else None
        elif origin is tuple:
            args = get_args(ann)
            if len(args) == 2 and args[1] is Ellipsis:
                ann = args[0]
            else:
                ann = args[part] if isinstance(part, int) and part < len(args) else None
        elif origin in (list, Sequence):
            ann = get_args(ann)[0]
        elif origin is dict:
            ann = get_args(ann)[1]
        else:
            ann = None
    return tuple(out), ann


def keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys a table at ``loc`` may hold (empty when it is not a model)."""
    _, ann = walk(model, loc)
    ann = _unwrap(ann)
    if isclass(ann) and issubclass(ann, BaseModel):
        return list(ann.model_fields)
    return []


def _choices(model: type[BaseModel], loc: Sequence[str | int]) -> tuple[object, ...]:
    _, ann = walk(model, loc)
    ann = _unwrap(ann)
    return get_args(ann) if get_origin(ann) is Literal else ()


def problems(model: type[BaseModel], exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        raw = tuple(err["loc"])
        loc, _ = walk(model, raw)
        msg = err["msg"]
        kind = err["type"]
        if kind == "extra_forbidden":
            hint = did_you_mean(loc[-1], keys_at(model, raw[:-1])) if loc else ""
            msg = f"unknown key{hint or ' (not allowed here; check the spelling)'}"
        elif kind in ("literal_error", "enum"):
            expected = str((err.get("ctx") or {}).get("expected", ""))
            choices = re.findall(r"'([^']*)'", expected) or _choices(model, raw)
            msg += did_you_mean(err.get("input"), choices)
        elif kind == "missing":
            msg = "missing: this key is required (Field required)"
        elif kind == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append(Problem(loc, msg))
    return out


def strict_problems(model: type[BaseModel], data: Any, skip: Iterable[Loc] = ()) -> list[Problem]:
    """Type errors of ``data`` (a file) that lax validation let through, except at or under
    the locations in ``skip`` (already reported, or overridden from the environment)."""
    done = tuple(skip)
    try:
        model.model_validate_json(json.dumps(data, default=str), strict=True)
    except ValidationError as exc:
        out = []
        for err in exc.errors(include_url=False):
            if err["type"] not in _STRICT_TYPES:
                continue
            loc, _ = walk(model, tuple(err["loc"]))
            if any(loc[: len(d)] == d or d[: len(loc)] == loc for d in done):
                continue
            out.append(Problem(loc, _strict_message(err["type"], err.get("input"))))
        return out
    return []


def _strict_message(kind: str, value: Any) -> str:
    want = {"int_type": "a whole number", "int_from_float": "a whole number"}.get(kind)
    want = want or ("true or false" if kind == "bool_type" else "a number")
    if isinstance(value, str):
        return f'{want}, not the text "{value}": write it without quotes'
    if isinstance(value, bool):
        return f"{want}, not {str(value).lower()}"
    return f"{want}, not {value!r}"
