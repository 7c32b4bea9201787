"""Bounded fuzzing of every serial parser: arbitrary bytes never crash a deframer or decoder
(only the documented ValueError subclasses), and a valid frame behind junk, fed in arbitrary
pieces, is always found again."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.serial import mbus, pelco_d
from drivers.serial.framing import Deframer
from drivers.serial.generic import GenericCodec, ParseError
from drivers.serial.mbus_records import RecordError, decode_rsp_ud
from tests.drivers.serial.serial_specs import ascii_spec, binary_spec
from tests.drivers.serial.test_serial_mbus import ENGELMANN_WATERSTAR

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ASCII = GenericCodec(ascii_spec())
BINARY = GenericCodec(binary_spec("length_prefix"))
GOOD_ASCII = ASCII.frame(b"!01,DIM=040,PWR=0025.2,V=230.1,ST=0,E=001234.51")
_BODY = b"\xaa\x09\x07\x04\xd2\xff\xc8"
GOOD_BINARY = BINARY.frame(_BODY)
GOOD_PELCO = pelco_d.extended_response(1, pelco_d.PAN_REPLY, 12345)


def drain(d: Deframer, data: bytes) -> list[bytes]:
    out = []
    frame = d.feed(data)
    while frame is not None:
        out.append(frame)
        frame = d.next_frame()
    return out


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@FUZZ
@given(st.binary(max_size=300))
def test_generic_ascii_never_crashes(data: bytes) -> None:
    d = ASCII.deframer()
    for body in drain(d, data):
        try:
            ASCII.parse(ASCII.spec.reads[0], body)
        except ParseError:
            pass
    assert d.pending() <= d.max_buffer


@FUZZ
@given(st.binary(max_size=300))
def test_generic_binary_never_crashes(data: bytes) -> None:
    d = BINARY.deframer()
    bodies = drain(d, data)
    for body in bodies:
        try:
            BINARY.parse(BINARY.spec.reads[0], body)
        except ParseError:
            pass
    # what is held is at most one incomplete candidate: a longer one, or a length field past
    # max_length, is rejected, so line noise can never grow the buffer (or hold a reply back)
    longest = BINARY.spec.framing.max_length
    assert d.pending() < longest <= d.max_buffer
    assert all(len(b) <= longest for b in bodies)
    assert sum(map(len, bodies)) + d.pending() <= len(data)


@FUZZ
@given(st.binary(max_size=300))
def test_pelco_never_crashes(data: bytes) -> None:
    for reply in (pelco_d.PAN_REPLY, None):
        for frame in drain(pelco_d.PelcoDeframer(1, reply), data):
            assert frame[0] == 0xFF and frame[1] == 1


@FUZZ
@given(st.binary(max_size=400))
def test_mbus_never_crashes(data: bytes) -> None:
    for raw in drain(mbus.MBusDeframer(), data):
        f = mbus.parse_frame(raw)
        if f.kind == "long":
            try:
                decode_rsp_ud(f.a, f.ci, f.data)
            except RecordError:
                pass
    for ci in (0x72, 0x7A, 0x78):
        # a link-valid telegram around arbitrary application data: only RecordError may escape
        raw = mbus.long_frame(0x08, 1, ci, data[:240])
        frames = drain(mbus.MBusDeframer(), raw)
        assert len(frames) == 1
        try:
            decode_rsp_ud(1, ci, mbus.parse_frame(frames[0]).data)
        except RecordError:
            pass


def _resync(d: Deframer, junk: bytes, good: bytes, cuts: list[int]) -> list[bytes]:
    frames: list[bytes] = []
    for part in chunks(junk + good, cuts):
        frames += drain(d, part)
    return frames


@FUZZ
@given(st.binary(max_size=120).filter(lambda b: b"!" not in b), st.lists(st.integers(0, 400)))
def test_ascii_resync(junk: bytes, cuts: list[int]) -> None:
    assert _resync(ASCII.deframer(), junk, GOOD_ASCII, cuts) == [GOOD_ASCII[:-4]]


@FUZZ
@given(st.binary(max_size=120).filter(lambda b: b"\xaa" not in b), st.lists(st.integers(0, 400)))
def test_binary_resync(junk: bytes, cuts: list[int]) -> None:
    assert _resync(BINARY.deframer(), junk, GOOD_BINARY, cuts) == [_BODY]


@FUZZ
@given(st.binary(max_size=120).filter(lambda b: b"\xff" not in b), st.lists(st.integers(0, 400)))
def test_pelco_resync(junk: bytes, cuts: list[int]) -> None:
    d = pelco_d.PelcoDeframer(1, pelco_d.PAN_REPLY)
    assert _resync(d, junk, GOOD_PELCO, cuts) == [GOOD_PELCO]


@FUZZ
@given(
    st.binary(max_size=120).filter(lambda b: not set(b) & {0x10, 0x68, 0xE5}),
    st.lists(st.integers(0, 400)),
)
def test_mbus_resync(junk: bytes, cuts: list[int]) -> None:
    assert _resync(mbus.MBusDeframer(), junk, ENGELMANN_WATERSTAR, cuts) == [ENGELMANN_WATERSTAR]
