"""Protocol-independent checks of a command value against the point's profile definition.

The driver's codec validates again when it encodes (one codec for reads and writes); this early
check gives the operator a precise reason and keeps junk out of the bus queue.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

from agent.control.model import CommandRejected
from drivers.core.profile import INT_RANGES, DataType, Point, Profile
from drivers.core.reading import Value


def check_value(point: Point, value: Value) -> Value:
    """Return the value normalized for the driver, or raise CommandRejected with the reason."""
    name = point.name
    if point.type in (DataType.BOOL, DataType.BIT):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise CommandRejected(f"'{name}' expects true/false, got {value!r}")
    if point.enum:
        if isinstance(value, str):
            if value in point.enum.values():
                return value
            allowed = ", ".join(point.enum.values())
            raise CommandRejected(f"'{name}' expects one of {allowed}, got {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and value in point.enum:
            return point.enum[value]
        raise CommandRejected(f"'{name}' expects one of {', '.join(point.enum.values())}")
    if point.type in (DataType.STRING, DataType.BITFIELD):
        raise CommandRejected(f"'{name}' ({point.type.value}) cannot be written by command")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandRejected(f"'{name}' expects a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CommandRejected(f"'{name}' expects a finite number")
    if point.min is not None and value < point.min:
        raise CommandRejected(f"'{name}' value {value} is below the minimum {point.min:g}")
    if point.max is not None and value > point.max:
        raise CommandRejected(f"'{name}' value {value} is above the maximum {point.max:g}")
    limits = INT_RANGES.get(point.type)
    if limits is not None:
        raw = (value - point.offset) / point.scale
        if not limits[0] <= round(raw) <= limits[1]:
            raise CommandRejected(f"'{name}' value {value} does not fit {point.type.value}")
    return value


def find_point(profile: Profile, name: str) -> Point | None:
    """A point by its name, or by its Smart Data Models metric (what IoT Agent and NGSI-LD
    clients name): ``dim_level`` and ``illuminanceLevel`` are the same point."""
    for p in profile.points:
        if p.name == name:
            return p
    return next((p for p in profile.points if p.metric == name), None)


_TRUE = {"true", "on", "1", "yes"}
_FALSE = {"false", "off", "0", "no"}


def value_from_text(point: Point, text: str) -> Value:
    """A value typed on a command line, read as the point's type: ``on``/``off`` are labels
    of an enum point (lamp_switch) and booleans only for a boolean point; a number stays text
    when it is an enum's label."""
    low = text.strip().lower()
    if point.type in (DataType.BOOL, DataType.BIT):
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return text
    if point.enum and text in point.enum.values():
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _decimals(x: float) -> int:
    exp = Decimal(repr(x)).normalize().as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def at_resolution(point: Point, value: Value) -> Value:
    """The value a register of ``point`` really holds after ``value`` is written to it: the
    codec rounds (value - offset) / scale half-to-even to an integer register (as
    drivers/modbus/codec.py does), so 0.405 on a 0.01-scaled register becomes 0.4."""
    if (
        point.type not in INT_RANGES
        or point.enum
        or isinstance(value, bool)
        or not isinstance(value, int | float)
    ):
        return value
    if point.scale == 1 and point.offset == 0 and isinstance(value, int):
        return value
    scale, offset = Decimal(repr(point.scale)), Decimal(repr(point.offset))
    raw = ((Decimal(repr(value)) - offset) / scale).quantize(Decimal(1), ROUND_HALF_EVEN)
    written = raw * scale + offset
    if point.scale == 1 and point.offset == 0:
        return int(written)
    return float(written)


def round_to_resolution(point: Point, value: Value) -> Value:
    """A read-back float without the binary noise of scaling (70 * 0.01 = 0.7000000000000001)."""
    if isinstance(value, float) and point.type in INT_RANGES and not point.enum:
        return round(value, _decimals(point.scale) + _decimals(point.offset))
    return value
