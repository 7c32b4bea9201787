"""Point codec: register words <-> engineering values, one table for reads and writes.

Byte order follows the letters of :class:`drivers.core.profile.WordOrder`: the value's big-endian
bytes ``A B C D`` (``A``..``H`` for 64-bit) as they appear on the wire. Decoding normalises the
words to big-endian bytes in two independent steps: CDAB/DCBA reverse the register order, BADC/DCBA
swap the two bytes inside each register. 16-bit values (and ``bit``/``bitfield`` registers) are
byte-swapped under BADC/DCBA too (the same convention as Telegraf's 16-bit ``BA``). Strings keep
register order (CDAB is a no-op) and swap bytes under BADC/DCBA.

We use ``struct`` rather than pymodbus' ``convert_from_registers``: it reverses word order only and
cannot express BADC/DCBA (LIBRARY-NOTES.md).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

from drivers.core.profile import INT_RANGES, DataType, Point, WordOrder
from drivers.core.reading import Value
from drivers.core.resolution import implied_decimals, rounder

_FMT: dict[DataType, str] = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
    DataType.BIT: ">H",
    DataType.BITFIELD: ">H",
}
_FLOATS = frozenset({DataType.FLOAT32, DataType.FLOAT64})
_WORD_SWAP = frozenset({WordOrder.CDAB, WordOrder.DCBA})
_BYTE_SWAP = frozenset({WordOrder.BADC, WordOrder.DCBA})


class CodecError(ValueError):
    """A value that cannot be decoded or encoded; ``point`` names the point, ``reason`` says why."""

    def __init__(self, point: Point | str, reason: str) -> None:
        self.point: str = point if isinstance(point, str) else point.name
        self.reason = reason
        super().__init__(f"point '{self.point}': {reason}")


def registers_for(point: Point) -> int:
    """Width on the wire: registers for register tables, bits (always 1) for coil/discrete."""
    return point.registers


def _swap_bytes(data: bytes) -> bytes:
    out = bytearray(data)
    out[0::2], out[1::2] = data[1::2], data[0::2]
    return bytes(out)


def _words_to_be(point: Point, regs: Sequence[int], order: WordOrder) -> bytes:
    """Register words as received -> the value's big-endian bytes."""
    if len(regs) != point.registers:
        raise CodecError(point, f"expected {point.registers} register(s), got {len(regs)}")
    words = regs[::-1] if order in _WORD_SWAP and point.type is not DataType.STRING else regs
    try:
        data = struct.pack(f">{len(words)}H", *words)
    except struct.error:
        raise CodecError(point, f"register words out of range 0..65535: {list(regs)}") from None
    return _swap_bytes(data) if order in _BYTE_SWAP else data


def _be_to_words(point: Point, data: bytes, order: WordOrder) -> list[int]:
    """Inverse of :func:`_words_to_be`."""
    if order in _BYTE_SWAP:
        data = _swap_bytes(data)
    words = list(struct.unpack(f">{len(data) // 2}H", data))
    if order in _WORD_SWAP and point.type is not DataType.STRING:
        words.reverse()
    return words


def decode_point(point: Point, regs: Sequence[int] | Sequence[bool], order: WordOrder) -> Value:
    """Decode exactly the point's registers (or its one bit) into the engineering value."""
    if point.table.is_bits:
        if len(regs) != 1:
            raise CodecError(point, f"expected 1 bit, got {len(regs)}")
        return bool(regs[0])
    words = [int(w) for w in regs]
    kind = point.type
    if kind is DataType.BOOL:
        if len(words) != 1:
            raise CodecError(point, f"expected 1 register, got {len(words)}")
        return words[0] != 0
    data = _words_to_be(point, words, order)
    if kind is DataType.STRING:
        text = data.decode("ascii", errors="replace").strip("\x00 ")
        return text.split("\x00", 1)[0].rstrip(" ")
    raw: int | float = struct.unpack(_FMT[kind], data)[0]
    if kind is DataType.BIT:
        return bool((int(raw) >> (point.bit or 0)) & 1)
    if kind is DataType.BITFIELD:
        flags = point.flags or {}
        return tuple(flags[b] for b in sorted(flags) if (int(raw) >> b) & 1)
    if point.flag_enum is not None:
        return flag_label(point, int(raw))
    if point.enum is not None:
        if isinstance(raw, float):
            if not raw.is_integer():
                raise CodecError(point, f"enum value {raw!r} is not an integer")
            raw = int(raw)
        name = point.enum.get(raw)
        if name is None:
            raise CodecError(point, f"enum value {raw} not in map")
        return name
    fixed = _fixed_point(point)
    if fixed is not None:  # as the compiled decoder: exact integer arithmetic, one division
        si, oi, div = fixed
        v_int = int(raw) * si + oi
        return v_int if div == 1 else v_int / div
    rnd = rounder(point)
    if point.scale == 1 and point.offset == 0:
        return raw if rnd is None else rnd(raw)
    v = raw * point.scale + point.offset
    return v if rnd is None else rnd(v)


def flag_label(point: Point, raw: int) -> str:
    """A ``flag_enum`` point's label: the first listed bit that is set, else the default."""
    for bit, label in (point.flag_enum or {}).items():
        if (raw >> bit) & 1:
            return label
    return point.flag_enum_default or ""


def _check_bounds(point: Point, value: float) -> None:
    # `not v >= min` (rather than `v < min`) also refuses NaN when bounds are set.
    if point.min is not None and not value >= point.min:
        raise CodecError(point, f"{value!r} is below the minimum {point.min:g}")
    if point.max is not None and not value <= point.max:
        raise CodecError(point, f"{value!r} is above the maximum {point.max:g}")


def _as_bool(point: Point, value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise CodecError(point, f"expected a boolean, got {value!r}")


def _number(point: Point, value: Value) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CodecError(point, f"expected a number, got {type(value).__name__} {value!r}")
    return value


def _to_raw_int(point: Point, value: int | float) -> int:
    """(value - offset) / scale rounded half-to-even, in decimal so 0.15/0.1 rounds to 2."""
    if isinstance(value, float) and not math.isfinite(value):
        raise CodecError(point, f"{value!r} cannot be written to a {point.type} register")
    if point.scale == 1 and point.offset == 0 and isinstance(value, int):
        raw = value
    else:
        with localcontext() as ctx:
            ctx.prec = 60
            exact = (Decimal(repr(value)) - Decimal(repr(point.offset))) / Decimal(
                repr(point.scale)
            )
            if abs(exact) > 2**65:
                raise CodecError(point, f"{value!r} is out of range for {point.type}")
            try:
                raw = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
            except InvalidOperation:
                raise CodecError(point, f"{value!r} is out of range for {point.type}") from None
    lo, hi = INT_RANGES.get(point.type, (0, 2**16 - 1))
    if not lo <= raw <= hi:
        raise CodecError(
            point, f"{value!r} (raw {raw}) is out of range for {point.type} ({lo}..{hi})"
        )
    return raw


def _enum_raw(point: Point, value: Value) -> int:
    enum = point.enum or {}
    if isinstance(value, str):
        for raw, name in enum.items():
            if name == value:
                return raw
        raise CodecError(point, f"'{value}' is not one of {', '.join(sorted(enum.values()))}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in enum:
        return value
    raise CodecError(point, f"expected an enum name or number of {sorted(enum)}, got {value!r}")


def _flags_raw(point: Point, value: Value) -> int:
    flags = point.flags or {}
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 0xFFFF:
            raise CodecError(point, f"bitfield value {value} is out of range 0..65535")
        return value
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise CodecError(point, f"expected a list of flag names, got {value!r}")
    by_name = {name: bit for bit, name in flags.items()}
    raw = 0
    for name in value:
        if name not in by_name:
            raise CodecError(
                point, f"unknown flag '{name}'; known: {', '.join(flags[b] for b in sorted(flags))}"
            )
        raw |= 1 << by_name[name]
    return raw


def encode_point(
    point: Point, value: Value, order: WordOrder, *, current: Sequence[int] | None = None
) -> list[int] | bool:
    """Validate ``value`` and encode it for a write: register words, or a bool for coils.

    ``bit`` points live inside a register shared with other bits, so they can only be written
    read-modify-write: pass the register's ``current`` word(s) and get the merged word back.
    Bounds (``point.min``/``point.max``) are checked in engineering units before scaling.
    """
    if point.table.is_bits:
        return _as_bool(point, value)
    kind = point.type
    if kind is DataType.BOOL:
        return [1 if _as_bool(point, value) else 0]
    if kind is DataType.BIT:
        on = _as_bool(point, value)
        if current is None:
            raise CodecError(
                point,
                "a bit inside a register needs the current register word "
                "(read-modify-write): pass current=",
            )
        word = struct.unpack(">H", _words_to_be(point, list(current), order))[0]
        mask = 1 << (point.bit or 0)
        word = word | mask if on else word & ~mask
        return _be_to_words(point, struct.pack(">H", word), order)
    if kind is DataType.STRING:
        if not isinstance(value, str):
            raise CodecError(point, f"expected a string, got {value!r}")
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError:
            raise CodecError(point, "only ASCII text can be written") from None
        size = 2 * point.registers
        if len(data) > size:
            raise CodecError(point, f"text of {len(data)} characters does not fit in {size}")
        return _be_to_words(point, data.ljust(size, b"\x00"), order)
    raw: int | float
    if kind is DataType.BITFIELD:
        raw = _flags_raw(point, value)
    elif point.enum is not None:
        raw = _enum_raw(point, value)
        if kind in _FLOATS:
            raw = float(raw)
        else:
            lo, hi = INT_RANGES[kind]
            if not lo <= raw <= hi:
                raise CodecError(point, f"enum value {raw} does not fit in {kind}")
    else:
        number = _number(point, value)
        _check_bounds(point, number)
        if kind in _FLOATS:
            try:
                raw = (float(number) - point.offset) / point.scale
            except OverflowError:
                raise CodecError(point, f"{number!r} is out of range for {kind}") from None
        else:
            raw = _to_raw_int(point, number)
    try:
        data = struct.pack(_FMT[kind], raw)
    except (struct.error, OverflowError):
        raise CodecError(point, f"{value!r} is out of range for {kind}") from None
    return _be_to_words(point, data, order)


def _fixed_point(point: Point) -> tuple[int, int, int] | None:
    """(scale, offset, divisor) as integers when an integer register's value is
    ``(raw * scale + offset) / divisor`` exactly at its implied decimals: one integer product
    and one correctly rounded division give the value at its resolution, cheaper than a float
    product and a ``round``. None for anything else."""
    if point.type not in INT_RANGES or point.decimals is not None:
        return None
    d = implied_decimals(point)
    if d is None or (point.scale == 1 and point.offset == 0):
        return None
    div = 10**d
    si, oi = round(point.scale * div), round(point.offset * div)
    if si / div != point.scale or oi / div != point.offset:
        return None
    return si, oi, div


@functools.lru_cache(maxsize=64)
def _struct(fmt: str) -> struct.Struct:
    # a handful of formats serve every point of every device: share them
    return struct.Struct(fmt)


def fast_decoder(point: Point, order: WordOrder) -> Callable[[Sequence[int]], Value] | None:
    """A decoder for the common case, compiled once per point: a plain number (no enum, no
    bits, no string) from register words. Same results as :func:`decode_point`; ``None`` for
    the cases only that one handles. Byte swapping inside each register is packing the words
    little-endian; word swapping is reversing them."""
    kind = point.type
    if (
        point.table.is_bits
        or point.enum is not None
        or point.flag_enum is not None
        or (kind not in INT_RANGES and kind not in _FLOATS)
    ):
        return None
    n = point.registers
    pack = _struct(("<" if order in _BYTE_SWAP else ">") + f"{n}H").pack
    unpack = _struct(_FMT[kind]).unpack
    reverse = order in _WORD_SWAP and n > 1
    scale: float = point.scale
    offset: float = point.offset
    div = 1
    # the value at the device's resolution (drivers/core/resolution.py), rounded here once so every
    # encoding and the CLI see the same number: by an integer product and one division where
    # that is exact (cheaper than a float product and a ``round``), else by the point's rounder
    rnd = rounder(point)
    fixed = _fixed_point(point)
    if fixed is not None:
        scale, offset, div = fixed
        rnd = None
    plain = scale == 1 and offset == 0

    def decode(words: Sequence[int]) -> Value:
        if len(words) != n:
            raise CodecError(point, f"expected {n} register(s), got {len(words)}")
        try:
            raw: int | float = unpack(pack(*(words[::-1] if reverse else words)))[0]
        except struct.error:
            raise CodecError(
                point, f"register words out of range 0..65535: {list(words)}"
            ) from None
        value = raw if plain else raw * scale + offset
        if div != 1:
            value /= div
        return value if rnd is None else rnd(value)

    return decode
