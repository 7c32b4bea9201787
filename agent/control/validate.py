"""Protocol-independent checks of a command value against the point's profile definition.

The driver's codec validates again when it encodes (one codec for reads and writes); this early
check gives the operator a precise reason and keeps junk out of the bus queue.
"""

from __future__ import annotations

import math

from agent.config.profile import DataType, Point
from agent.control.model import CommandRejected
from agent.reading import Value

_INT_TYPES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


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
    limits = _INT_TYPES.get(point.type)
    if limits is not None:
        raw = (value - point.offset) / point.scale
        if not limits[0] <= round(raw) <= limits[1]:
            raise CommandRejected(f"'{name}' value {value} does not fit {point.type.value}")
    return value
