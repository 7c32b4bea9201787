"""Engineering value <-> register words for the simulators, driven by a profile point.

Deliberately independent of drivers/modbus/codec.py: the simulator is the reference peer the
real codec is tested against, so it must not share the codec's bugs. Byte-order letters follow
drivers.core.profile.WordOrder: the value's big-endian bytes are A B C D (E F G H for 64 bit);
CDAB reverses the register order, BADC swaps the two bytes inside each register, DCBA does both.
Strings (two ASCII characters per register, the first in the high byte) keep their register
order; only BADC/DCBA swap the bytes inside each register (the codec's convention).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from drivers.core.profile import DataType, Point, WordOrder

_FMT = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
    DataType.BITFIELD: "H",
    DataType.BOOL: "H",
}
_RANGE = {
    "h": (-(1 << 15), (1 << 15) - 1),
    "H": (0, (1 << 16) - 1),
    "i": (-(1 << 31), (1 << 31) - 1),
    "I": (0, (1 << 32) - 1),
    "q": (-(1 << 63), (1 << 63) - 1),
    "Q": (0, (1 << 64) - 1),
}


def _words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _bytes(words: Sequence[int]) -> bytes:
    return b"".join(int(w).to_bytes(2, "big") for w in words)


def reorder(words: list[int], order: WordOrder) -> list[int]:
    """ABCD words -> wire words in ``order`` (the operation is its own inverse)."""
    if order in (WordOrder.CDAB, WordOrder.DCBA):
        words = words[::-1]
    if order in (WordOrder.BADC, WordOrder.DCBA):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


def encode(point: Point, value: float | int | bool | str, order: WordOrder) -> list[int]:
    """Register words for one point (``bit`` points are merged by the caller)."""
    if point.type is DataType.STRING:
        n = 2 * (point.length or 1)
        words = _words(str(value).encode("ascii", "replace")[:n].ljust(n, b"\0"))
        return (
            reorder(words, WordOrder.BADC) if order in (WordOrder.BADC, WordOrder.DCBA) else words
        )
    fmt = _FMT[point.type]
    if fmt in "fd":
        raw: float | int = (float(value) - point.offset) / point.scale
    elif point.type in (DataType.BITFIELD, DataType.BOOL) or point.enum:
        raw = int(value)
    else:
        raw = round((float(value) - point.offset) / point.scale)
        lo, hi = _RANGE[fmt]
        raw = min(hi, max(lo, raw))  # a sensor saturates rather than wrapping
    return reorder(_words(struct.pack(">" + fmt, raw)), order)


def decode(point: Point, words: Sequence[int], order: WordOrder) -> float | int | str:
    """Engineering value of a written point (numbers scaled; enums/bitfields raw)."""
    if point.type is DataType.STRING:
        if order in (WordOrder.BADC, WordOrder.DCBA):
            words = reorder(list(words), WordOrder.BADC)
        return _bytes(words).rstrip(b"\0 ").decode("ascii", "replace")
    fmt = _FMT[point.type]
    (raw,) = struct.unpack(">" + fmt, _bytes(reorder(list(words), order)))
    if point.enum or point.type in (DataType.BITFIELD, DataType.BOOL):
        return int(raw)
    value: float = raw * point.scale + point.offset
    return value


def merge_bit(word: int, bit: int, on: bool) -> int:
    return word | (1 << bit) if on else word & ~(1 << bit) & 0xFFFF
