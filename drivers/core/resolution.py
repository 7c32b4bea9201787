"""Values at the device's resolution: one rounding rule per point, compiled once.

A register holding 612 with ``scale = 0.1`` means 61.2, but ``612 * 0.1`` is
61.300000000000004 in binary floating point, and a float32 register holding 230.2 arrives as
230.1999969482422. Neither digit is the device's: every encoding and the CLI must see 61.2 and
230.2. The rule, decided from the point alone:

- ``decimals`` set in the profile: round to that many decimals (0 gives an ``int``).
- an integer register with ``scale``/``offset``: the decimals the scale and offset imply
  (0.01 -> 2, 0.25 -> 2, 10 -> 0 and an ``int``); a plain integer register needs nothing.
- a float32 register: the shortest decimal that reads back as the same float32 (at most
  9 significant digits; 7 once scaled), which is what the device meant.
- a float64 register: exact as it is; 15 significant digits once scaled.

Raw register values stay exact in the reading's ``source`` (table, address, raw type).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

from drivers.core.profile import INT_RANGES, DataType, Point

Rounder = Callable[[float], float | int]

MAX_DECIMALS = 12
_f32 = struct.Struct(">f")


def decimals_of(x: float) -> int | None:
    """Decimals needed to write ``x`` exactly (0.25 -> 2, 10 -> 0); None beyond MAX_DECIMALS."""
    if not math.isfinite(x):
        return None
    for d in range(MAX_DECIMALS + 1):
        if float(f"{x:.{d}f}") == x:
            return d
    return None


def implied_decimals(point: Point) -> int | None:
    """Decimals of an integer register's engineering value (None: not an integer register,
    or a scale without a finite decimal expansion such as 1/3)."""
    if point.type not in INT_RANGES or point.enum is not None or point.flag_enum is not None:
        return None
    ds, do = decimals_of(point.scale), decimals_of(point.offset)
    if ds is None or do is None:
        return None
    return max(ds, do)


def point_decimals(point: Point) -> int | None:
    """The decimals a value of this point is rounded to (None: significant digits rule)."""
    if point.decimals is not None:
        return point.decimals
    return implied_decimals(point)


def _to_int(v: float) -> float | int:
    try:
        return round(v)
    except (ValueError, OverflowError):  # NaN / inf from a float register stay as they are
        return v


def _shortest_f32(v: float) -> float:
    # round(x, 7 significant) reads back as the same float32 for nearly every value; 8 and 9
    # digits cover the rest (9 always round-trips a float32)
    packed = _f32.pack(v)
    for digits in (7, 8):
        s = float(f"{v:.{digits}g}")
        if _f32.pack(s) == packed:
            return s
    return float(f"{v:.9g}")


def _significant(digits: int) -> Rounder:
    fmt = f".{digits}g"

    def rnd(v: float) -> float:
        return float(format(v, fmt))

    return rnd


def rounder(point: Point) -> Rounder | None:
    """The point's rounding function, or None when its values are exact as decoded (plain
    integer and float64 registers, and every non-numeric point)."""
    if not point.is_numeric or point.type in (DataType.BOOL, DataType.BIT):
        return None
    plain = point.scale == 1 and point.offset == 0
    d = point_decimals(point)
    if d is None:
        if point.type is DataType.FLOAT32:
            return _shortest_f32 if plain else _significant(7)
        if point.type is DataType.FLOAT64:
            return None if plain else _significant(15)
        return None if plain else _significant(15)  # an integer scale like 1/3
    if plain and point.type in INT_RANGES and point.decimals is None:
        return None
    if d == 0:
        return _to_int
    return lambda v: round(v, d)


def filter_rounder(point: Point) -> Rounder:
    """For values a filter computed (smoothing, totalizer): the point's resolution, and a
    plain integer register's is 1."""
    r = rounder(point)
    if r is not None:
        return r
    if point.type in INT_RANGES:
        return _to_int
    if point.type is DataType.FLOAT32:
        return _shortest_f32
    return _significant(15)


def round_value(point: Point, value: float | int) -> float | int:
    """One value at the point's resolution (the slow path: read-backs, the CLI)."""
    r = rounder(point)
    return value if r is None or isinstance(value, bool) else r(value)
