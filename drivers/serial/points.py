"""Point value conversion for the non-Modbus drivers: parsed field -> engineering value, and
engineering value -> raw value for a write command (the inverse of scale/offset)."""

from __future__ import annotations

import math

from drivers.core.profile import INT_RANGES, DataType, Point
from drivers.core.reading import Value
from drivers.core.resolution import Rounder, rounder

RawValue = str | int | float | bytes | None

_FALSE = {"", "0", "false", "off", "no", "n", "f"}


class PointValueError(ValueError):
    def __init__(self, point: str, reason: str) -> None:
        self.point = point
        self.reason = reason
        super().__init__(f"point '{point}': {reason}")


def _text(raw: RawValue) -> str:
    if isinstance(raw, bytes):
        return raw.decode("latin-1").strip("\x00 ")
    return str(raw).strip()


def _number(p: Point, raw: RawValue) -> int | float:
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int | float):
        return raw
    text = _text(raw)
    try:
        return int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise PointValueError(p.name, f"not a number: {text[:32]!r}") from None
        if not math.isfinite(f):
            raise PointValueError(p.name, "not a finite number") from None
        return f


def to_value(p: Point, raw: RawValue) -> Value:
    """Engineering value of a parsed field; raises PointValueError when it cannot be one."""
    if raw is None:
        raise PointValueError(p.name, "device reports no valid value")
    if p.type is DataType.STRING:
        return _text(raw)
    if p.type is DataType.BOOL:
        return bool(raw) if isinstance(raw, int | float) else _text(raw).lower() not in _FALSE
    n = _number(p, raw)
    if p.flag_enum is not None:
        if not isinstance(n, int):
            raise PointValueError(p.name, f"expected an integer, got {n}")
        for bit, label in p.flag_enum.items():
            if n >> bit & 1:
                return label
        return p.flag_enum_default or ""
    if p.type is DataType.BITFIELD or p.enum:
        if not isinstance(n, int):
            raise PointValueError(p.name, f"expected an integer, got {n}")
        if p.enum:
            return p.enum.get(n, str(n))
        return tuple(name for bit, name in sorted((p.flags or {}).items()) if n >> bit & 1)
    if p.type is DataType.BIT:
        return bool(int(n) >> (p.bit or 0) & 1)
    if p.scale == 1.0 and p.offset == 0.0 and isinstance(n, int) and p.type in INT_RANGES:
        return n if p.decimals is None else _rounded(p, n)
    plain = p.scale == 1.0 and p.offset == 0.0
    if plain and isinstance(raw, str | bytes) and p.decimals is None:
        return float(n)  # parsed from the device's text: exactly the digits it sent
    return _rounded(p, float(n) * p.scale + p.offset)  # 61.2 * 0.1 is 6.12, not 6.120000000000001


def _rounded(p: Point, v: float) -> int | float:
    # rounding rules as for Modbus registers (drivers/core/resolution.py), compiled once per point
    # (profiles live as long as the process; the point is kept so its id is never reused)
    entry = _ROUNDERS.get(id(p))
    if entry is None or entry[0] is not p:
        entry = _ROUNDERS[id(p)] = (p, rounder(p))
    rnd = entry[1]
    return v if rnd is None else rnd(v)


_ROUNDERS: dict[int, tuple[Point, Rounder | None]] = {}


def to_raw(p: Point, value: Value) -> int | float | str:
    """Raw value for a write command; raises PointValueError (the write is rejected) when the value
    is of the wrong kind, outside the point's bounds, or does not fit its type."""
    if not p.writable:
        raise PointValueError(p.name, "point is read-only")
    if p.type is DataType.STRING:
        if not isinstance(value, str):
            raise PointValueError(p.name, "expected a string")
        return value
    if p.enum and isinstance(value, str):
        codes = {label: code for code, label in p.enum.items()}
        if value not in codes:
            raise PointValueError(p.name, f"'{value}' is not one of {sorted(codes)}")
        return codes[value]
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise PointValueError(p.name, f"expected a number, got {value!r}")
    if p.min is not None and value < p.min:
        raise PointValueError(p.name, f"{value} is below the minimum {p.min}")
    if p.max is not None and value > p.max:
        raise PointValueError(p.name, f"{value} is above the maximum {p.max}")
    raw = (value - p.offset) / p.scale
    if p.type in (DataType.FLOAT32, DataType.FLOAT64):
        return raw
    r = round(raw)
    if abs(r - raw) > 1e-6:
        raise PointValueError(p.name, f"{value} is not a whole number of steps of {p.scale}")
    bits = p.type in (DataType.BOOL, DataType.BIT)
    lo, hi = INT_RANGES.get(p.type, (0, 1) if bits else (0, 2**16))
    if not lo <= r <= hi:
        raise PointValueError(p.name, f"raw value {r} does not fit {p.type.value}")
    return r
