"""Codec: a decode table against hand-computed words, validation of writes, and round trips."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.core.profile import DataType, Point, Table, WordOrder
from drivers.modbus.codec import (
    CodecError,
    decode_point,
    encode_point,
    fast_decoder,
    registers_for,
)

A, C, B, D = WordOrder.ABCD, WordOrder.CDAB, WordOrder.BADC, WordOrder.DCBA
ORDERS = list(WordOrder)


def regs(p: Point, value: Any, order: WordOrder) -> list[int]:
    """encode_point for a register point (its words; a coil's bool never comes back here)."""
    words = encode_point(p, value, order)
    assert isinstance(words, list)
    return words


def pt(type_: str = "uint16", **kw: Any) -> Point:
    return Point.model_validate({"name": "p", "type": type_, **kw})


# (type, extra point keys, expected value, {order: wire words}) — words computed by hand from the
# value's big-endian bytes ABCD(EFGH): CDAB reverses registers, BADC swaps bytes in each register.
TABLE: list[tuple[str, dict[str, Any], Any, dict[WordOrder, list[int]]]] = [
    (
        "float32",
        {},
        123.456,
        {A: [0x42F6, 0xE979], C: [0xE979, 0x42F6], B: [0xF642, 0x79E9], D: [0x79E9, 0xF642]},
    ),
    (
        "int32",
        {},
        0x12345678,
        {A: [0x1234, 0x5678], C: [0x5678, 0x1234], B: [0x3412, 0x7856], D: [0x7856, 0x3412]},
    ),
    (
        "int32",
        {},
        -2,
        {A: [0xFFFF, 0xFFFE], C: [0xFFFE, 0xFFFF], B: [0xFFFF, 0xFEFF], D: [0xFEFF, 0xFFFF]},
    ),
    (
        "uint32",
        {},
        0xDEADBEEF,
        {A: [0xDEAD, 0xBEEF], C: [0xBEEF, 0xDEAD], B: [0xADDE, 0xEFBE], D: [0xEFBE, 0xADDE]},
    ),
    (
        "int64",
        {},
        0x0102030405060708,
        {
            A: [0x0102, 0x0304, 0x0506, 0x0708],
            C: [0x0708, 0x0506, 0x0304, 0x0102],
            B: [0x0201, 0x0403, 0x0605, 0x0807],
            D: [0x0807, 0x0605, 0x0403, 0x0201],
        },
    ),
    (
        "int64",
        {},
        -1234567890123,
        {  # 0xFFFFFEE08E04FB35
            A: [0xFFFF, 0xFEE0, 0x8E04, 0xFB35],
            C: [0xFB35, 0x8E04, 0xFEE0, 0xFFFF],
            B: [0xFFFF, 0xE0FE, 0x048E, 0x35FB],
            D: [0x35FB, 0x048E, 0xE0FE, 0xFFFF],
        },
    ),
    (
        "uint64",
        {},
        0xFEDCBA9876543210,
        {
            A: [0xFEDC, 0xBA98, 0x7654, 0x3210],
            C: [0x3210, 0x7654, 0xBA98, 0xFEDC],
            B: [0xDCFE, 0x98BA, 0x5476, 0x1032],
            D: [0x1032, 0x5476, 0x98BA, 0xDCFE],
        },
    ),
    (
        "float64",
        {},
        123.456,
        {  # 0x405EDD2F1A9FBE77
            A: [0x405E, 0xDD2F, 0x1A9F, 0xBE77],
            C: [0xBE77, 0x1A9F, 0xDD2F, 0x405E],
            B: [0x5E40, 0x2FDD, 0x9F1A, 0x77BE],
            D: [0x77BE, 0x9F1A, 0x2FDD, 0x5E40],
        },
    ),
    (
        "float64",
        {},
        -2.5,
        {A: [0xC004, 0, 0, 0], C: [0, 0, 0, 0xC004], B: [0x04C0, 0, 0, 0], D: [0, 0, 0, 0x04C0]},
    ),
    ("int16", {}, -2, {A: [0xFFFE], C: [0xFFFE], B: [0xFEFF], D: [0xFEFF]}),
    ("int16", {}, -32768, {A: [0x8000], C: [0x8000], B: [0x0080], D: [0x0080]}),
    ("uint16", {}, 0xABCD, {A: [0xABCD], C: [0xABCD], B: [0xCDAB], D: [0xCDAB]}),
    (
        "string",
        {"length": 2},
        "ABCD",
        {A: [0x4142, 0x4344], C: [0x4142, 0x4344], B: [0x4241, 0x4443], D: [0x4241, 0x4443]},
    ),
    (
        "string",
        {"length": 3},
        "Hi",
        {A: [0x4869, 0, 0], C: [0x4869, 0, 0], B: [0x6948, 0, 0], D: [0x6948, 0, 0]},
    ),
    ("bit", {"bit": 3}, True, {A: [0x0008], C: [0x0008], B: [0x0800], D: [0x0800]}),
    ("bit", {"bit": 15}, False, {A: [0x7FFF], C: [0x7FFF], B: [0xFF7F], D: [0xFF7F]}),
    (
        "bitfield",
        {"flags": {0: "lamp_fail", 1: "door_open", 15: "comms"}},
        ("lamp_fail", "door_open", "comms"),
        {A: [0x8003], C: [0x8003], B: [0x0380], D: [0x0380]},
    ),
    (
        "uint16",
        {"enum": {0: "off", 1: "on", 2: "dimmed"}},
        "dimmed",
        {A: [2], C: [2], B: [0x0200], D: [0x0200]},
    ),
    ("uint16", {"scale": 0.1}, 123.4, {A: [1234], C: [1234], B: [0xD204], D: [0xD204]}),
    (
        "int16",
        {"scale": 0.1, "offset": -40},
        -60.0,
        {A: [0xFF38], C: [0xFF38], B: [0x38FF], D: [0x38FF]},
    ),  # raw -200
    (
        "uint32",
        {"scale": 0.001},
        70000.0,  # raw 70_000_000 = 0x042C1D80
        {A: [0x042C, 0x1D80], C: [0x1D80, 0x042C], B: [0x2C04, 0x801D], D: [0x801D, 0x2C04]},
    ),
]
CASES = [(t, kw, v, o, w) for t, kw, v, m in TABLE for o, w in m.items()]


@pytest.mark.parametrize(
    ("type_", "kw", "value", "order", "words"),
    CASES,
    ids=[f"{c[0]}-{c[2]!r}-{c[3]}" for c in CASES],
)
def test_decode_table(
    type_: str, kw: dict[str, Any], value: Any, order: WordOrder, words: list[int]
) -> None:
    p = pt(type_, **kw)
    got = decode_point(p, words, order)
    if isinstance(value, float):
        assert isinstance(got, float)
        assert got == pytest.approx(value, rel=1e-6)
    else:
        assert got == value
        assert type(got) is type(value)


@pytest.mark.parametrize(
    ("type_", "kw", "value", "order", "words"),
    CASES,
    ids=[f"{c[0]}-{c[2]!r}-{c[3]}" for c in CASES],
)
def test_encode_table(
    type_: str, kw: dict[str, Any], value: Any, order: WordOrder, words: list[int]
) -> None:
    p = pt(type_, **kw)
    if type_ == "bit":
        # the other bits come from the current word (read-modify-write): writing the value the
        # register already holds changes nothing, writing the opposite changes exactly one bit
        assert encode_point(p, value, order, current=words) == words
        flipped = encode_point(p, not value, order, current=words)
        assert isinstance(flipped, list)
        assert bin(flipped[0] ^ words[0]).count("1") == 1
    else:
        assert encode_point(p, value, order) == words


def test_registers_for_and_types() -> None:
    assert registers_for(pt("float64")) == 4
    assert registers_for(pt("string", length=7)) == 7
    assert registers_for(pt("bool", table="coil")) == 1
    assert type(decode_point(pt("uint32"), [0, 7], A)) is int
    # an integer register keeps an int value when its scale and offset are whole numbers
    # (the value's resolution is 1 or coarser: drivers/core/resolution.py)
    assert type(decode_point(pt("uint16", scale=2), [7], A)) is int
    assert type(decode_point(pt("uint16", offset=1), [7], A)) is int
    assert type(decode_point(pt("uint16", scale=0.5), [7], A)) is float
    assert type(decode_point(pt("uint16", offset=0.5), [7], A)) is float


def test_bools_coils_and_registers() -> None:
    assert decode_point(pt("bool", table="coil"), [True], A) is True
    assert decode_point(pt("bool", table="discrete"), [False], D) is False
    assert decode_point(pt("bool"), [0], A) is False
    assert decode_point(pt("bool"), [0x0100], B) is True
    assert encode_point(pt("bool", table="coil"), True, A) is True
    assert encode_point(pt("bool", table="coil"), 0, A) is False
    assert encode_point(pt("bool"), True, D) == [1]


def test_nan_and_inf_pass_through() -> None:
    assert math.isnan(decode_point(pt("float32"), [0x7FC0, 0], A))  # type: ignore[arg-type]
    assert decode_point(pt("float32", scale=2), [0xFF80, 0], A) == -math.inf
    assert decode_point(pt("float64"), [0, 0, 0, 0xF07F], D) == math.inf


def test_string_padding_and_garbage_after_nul() -> None:
    p = pt("string", length=4)
    assert decode_point(p, [0x2041, 0x4220, 0x2000, 0], A) == "AB"
    assert decode_point(p, [0x4142, 0x0058, 0x5959, 0x5959], A) == "AB"
    assert decode_point(p, [0x41FF, 0, 0, 0], A) == "A\ufffd"


def test_enum_unknown_value_is_an_error_with_reason() -> None:
    p = pt("uint16", enum={0: "off", 1: "on"})
    with pytest.raises(CodecError) as exc:
        decode_point(p, [7], A)
    assert exc.value.point == "p"
    assert exc.value.reason == "enum value 7 not in map"


@pytest.mark.parametrize(
    ("regs", "why"),
    [
        ([1], "expected 2 register"),
        ([1, 2, 3], "got 3"),
        ([70000, 0], "out of range 0..65535"),
        ([-1, 0], "out"),
    ],
)
def test_bad_register_input(regs: list[int], why: str) -> None:
    with pytest.raises(CodecError, match=why):
        decode_point(pt("uint32"), regs, A)


@pytest.mark.parametrize(
    ("point_kw", "value", "reason"),
    [
        ({"type": "uint16"}, True, "expected a number"),
        ({"type": "uint16"}, "12", "expected a number"),
        ({"type": "int16"}, 40000, "out of range for int16"),
        ({"type": "uint16"}, -1, "out of range for uint16"),
        ({"type": "uint16", "scale": 0.1}, 6553.6, "raw 65536"),
        ({"type": "uint16", "min": 0, "max": 100}, 100.5, "above the maximum 100"),
        ({"type": "float32", "min": -5}, -5.01, "below the minimum -5"),
        ({"type": "float32", "min": 0, "max": 1}, math.nan, "below the minimum"),
        ({"type": "int32"}, math.inf, "cannot be written"),
        ({"type": "uint64"}, 1e300, "out of range"),
        ({"type": "float32"}, 1e39, "out of range for float32"),
        ({"type": "uint16", "enum": {0: "off", 1: "on"}}, "dim", "'dim' is not one of off, on"),
        ({"type": "uint16", "enum": {0: "off", 1: "on"}}, 5, "expected an enum name"),
        ({"type": "uint16", "enum": {0: "off", 1: "on"}}, True, "expected an enum name"),
        ({"type": "string", "length": 1}, "abc", "does not fit"),
        ({"type": "string", "length": 4}, "Hà Nội", "only ASCII"),
        ({"type": "string", "length": 4}, 12, "expected a string"),
        ({"type": "bool"}, 2, "expected a boolean"),
        ({"type": "bit", "bit": 2}, True, "read-modify-write"),
        ({"type": "bitfield", "flags": {0: "a"}}, ("b",), "unknown flag 'b'; known: a"),
        ({"type": "bitfield", "flags": {0: "a"}}, "a", "expected a list"),
    ],
)
def test_encode_refuses(point_kw: dict[str, Any], value: Any, reason: str) -> None:
    p = Point.model_validate({"name": "setpoint", **point_kw})
    with pytest.raises(CodecError, match=reason) as exc:
        encode_point(p, value, A)
    assert exc.value.point == "setpoint"
    assert reason.split("'", 1)[0].split(" (", 1)[0] in exc.value.reason


@pytest.mark.parametrize(
    ("value", "scale", "raw"),
    [
        (2.5, 1, 2),
        (3.5, 1, 4),
        (-2.5, 1, -2),
        (0.15, 0.1, 2),
        (0.25, 0.1, 2),
        (0.35, 0.1, 4),
        (12.3, 0.1, 123),
        (100, 10, 10),
        (149.99, 100, 1),
    ],
)
def test_round_half_even_in_decimal(value: float, scale: float, raw: int) -> None:
    assert encode_point(pt("int16", scale=scale), value, A) == [raw & 0xFFFF]


def test_enum_and_bitfield_writes() -> None:
    p = pt("uint16", enum={0: "off", 1: "on", 2: "dimmed"})
    assert encode_point(p, "dimmed", A) == [2]
    assert encode_point(p, 1, B) == [0x0100]
    assert encode_point(p, 1.0, A) == [1]
    f = pt("bitfield", flags={0: "a", 3: "b"})
    assert encode_point(f, ["b", "a"], A) == [0x0009]  # type: ignore[arg-type]  # a list of labels
    assert encode_point(f, 0x0100, A) == [0x0100]


# --- round trips: encode -> decode returns the value, within the scale's quantization -----------

SCALES = st.sampled_from([(1.0, 0.0), (0.1, 0.0), (0.01, -40.0), (10.0, 0.0), (-0.5, 273.15)])
INT_BITS = {
    "int16": (True, 16),
    "uint16": (False, 16),
    "int32": (True, 32),
    "uint32": (False, 32),
    "int64": (True, 64),
    "uint64": (False, 64),
}


@st.composite
def int_cases(draw: st.DrawFn) -> tuple[Point, float | int, float]:
    type_ = draw(st.sampled_from(sorted(INT_BITS)))
    signed, bits = INT_BITS[type_]
    scale, offset = draw(SCALES)
    if scale == 1.0 and offset == 0.0:
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        return pt(type_), draw(st.integers(lo, hi)), 0.0
    bits = min(bits, 40)  # keep raw*scale exactly representable in a float
    lo, hi = (-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 2) if signed else (1, 2**bits - 2)
    raw = draw(st.integers(lo, hi))
    jitter = draw(st.floats(-0.49, 0.49))
    value = (raw + jitter) * scale + offset
    return pt(type_, scale=scale, offset=offset), value, abs(scale) / 2


@settings(max_examples=300, deadline=None)
@given(case=int_cases(), order=st.sampled_from(ORDERS))
def test_round_trip_integers(case: tuple[Point, float | int, float], order: WordOrder) -> None:
    p, value, tol = case
    words = encode_point(p, value, order)
    assert isinstance(words, list) and len(words) == p.registers
    assert all(0 <= w <= 0xFFFF for w in words)
    got = decode_point(p, words, order)
    assert isinstance(got, int | float)
    if tol == 0:
        assert got == value and type(got) is int
    else:
        assert abs(got - value) <= tol * (1 + 1e-9) + abs(value) * 1e-12


@settings(max_examples=200, deadline=None)
@given(
    value=st.floats(allow_nan=False, width=32), order=st.sampled_from(ORDERS), wide=st.booleans()
)
def test_round_trip_floats_exact(value: float, order: WordOrder, wide: bool) -> None:
    p = pt("float64" if wide else "float32")
    words = regs(p, value, order)
    got = decode_point(p, words, order)
    if wide:
        assert got == value
    else:  # the shortest decimal that is the same float32 (drivers/core/resolution.py)
        assert isinstance(got, float)
        assert struct.pack(">f", got) == struct.pack(">f", value)
        assert got == float(f"{got:.9g}")  # at most 9 significant digits


@settings(max_examples=100, deadline=None)
@given(
    value=st.floats(-1e30, 1e30),
    scale=st.sampled_from([0.1, 2.0, -0.001]),
    order=st.sampled_from(ORDERS),
)
def test_round_trip_scaled_float32(value: float, scale: float, order: WordOrder) -> None:
    p = pt("float32", scale=scale, offset=1.5)
    got = decode_point(p, regs(p, value, order), order)
    # a scaled float32 keeps 7 significant digits (drivers/core/resolution.py)
    assert got == pytest.approx(value, rel=6e-7, abs=6e-7 * abs(1.5) + 1e-30)


@settings(max_examples=100, deadline=None)
@given(
    # padding is stripped on decode, so only text without leading/trailing spaces round-trips
    text=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12).map(
        lambda s: s.strip(" ")
    ),
    order=st.sampled_from(ORDERS),
)
def test_round_trip_strings(text: str, order: WordOrder) -> None:
    p = pt("string", length=6)
    assert decode_point(p, regs(p, text, order), order) == text


@settings(max_examples=100, deadline=None)
@given(
    current=st.integers(0, 0xFFFF),
    bit=st.integers(0, 15),
    on=st.booleans(),
    order=st.sampled_from(ORDERS),
)
def test_round_trip_bits_keep_neighbours(
    current: int, bit: int, on: bool, order: WordOrder
) -> None:
    p = pt("bit", bit=bit)
    words = encode_point(p, on, order, current=[current])
    assert isinstance(words, list)
    assert decode_point(p, words, order) is on
    for other in range(16):
        if other != bit:
            q = pt("bit", bit=other)
            assert decode_point(q, words, order) == decode_point(q, [current], order)


FLAGS = {0: "a", 1: "b", 5: "c", 9: "d", 15: "e"}


@settings(max_examples=60, deadline=None)
@given(
    chosen=st.sets(st.sampled_from(sorted(FLAGS))),
    order=st.sampled_from(ORDERS),
    enum_key=st.sampled_from([0, 3, 65535]),
    on=st.booleans(),
)
def test_round_trip_bitfield_enum_bool(
    chosen: set[int], order: WordOrder, enum_key: int, on: bool
) -> None:
    f = pt("bitfield", flags=FLAGS)
    names = tuple(FLAGS[b] for b in sorted(chosen))
    assert decode_point(f, regs(f, list(reversed(names)), order), order) == names
    e = pt("uint16", enum={0: "off", 3: "fault", 65535: "n/a"})
    name = e.enum[enum_key]  # type: ignore[index]
    assert decode_point(e, regs(e, name, order), order) == name
    for table in (Table.COIL, Table.HOLDING):
        b = pt("bool", table=table.value)
        enc = encode_point(b, on, order)
        assert decode_point(b, [enc] if isinstance(enc, bool) else enc, order) is on


def test_every_type_covered_by_round_trips() -> None:
    covered = {*INT_BITS, "float32", "float64", "string", "bit", "bitfield", "bool"}
    assert covered == {t.value for t in DataType}


NUMERIC = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


@settings(max_examples=400, deadline=None)
@given(
    type_=st.sampled_from(NUMERIC),
    order=st.sampled_from(ORDERS),
    scaled=st.booleans(),
    words=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
)
def test_fast_decoder_matches_decode_point(
    type_: str, order: WordOrder, scaled: bool, words: list[int]
) -> None:
    """The compiled per-point decoder of the poll hot path is decode_point, only faster."""
    p = pt(type_, **({"scale": 0.1, "offset": -40} if scaled else {}))
    fast = fast_decoder(p, order)
    assert fast is not None
    regs = words[: p.registers]
    want, got = decode_point(p, regs, order), fast(regs)
    assert type(got) is type(want)
    assert got == want or (math.isnan(got) and math.isnan(want))  # type: ignore[arg-type]


def test_fast_decoder_errors_and_fallbacks() -> None:
    f = fast_decoder(pt("uint32"), A)
    assert f is not None
    with pytest.raises(CodecError, match="expected 2 register"):
        f([1])
    with pytest.raises(CodecError, match="out of range"):
        f([1, 70000])
    for point in (
        pt("string", length=2),
        pt("bit", bit=3),
        pt("bitfield", flags={0: "a"}),
        pt("bool"),
        pt("uint16", enum={1: "on"}),
        pt("bool", table="coil"),
    ):
        assert fast_decoder(point, A) is None, point.type
