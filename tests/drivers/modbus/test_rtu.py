"""Modbus RTU and ASCII framing (drivers/modbus/rtu.py) as byte tables, without a port: replies
split anywhere, behind noise, false starts and echoes, CRC / LRC errors, other units' replies,
and what a timeout means on a serial port and on a TCP stream. pymodbus' framers are the
reference for the bytes of a request, and show why their decoder is not used."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerAscii, FramerRTU
from pymodbus.pdu import DecodePDU

from drivers.checksums import crc16_modbus
from drivers.modbus.results import MAX_SILENT
from drivers.modbus.rtu import AsciiFramer, RtuFramer

READ = bytes.fromhex("03 0000 0002")  # FC03, registers 0..1
REPLY = bytes.fromhex("03 04 0005 0006")


def rtu(unit: int, pdu: bytes) -> bytes:
    frame = bytes((unit,)) + pdu
    return frame + crc16_modbus(frame).to_bytes(2, "little")


def waiting(unit: int = 1, *, stream: bool = False) -> RtuFramer:
    f = RtuFramer(stream=stream)
    f.request(unit, READ)
    return f


def test_request_frames_are_pymodbus_bytes_and_the_specs() -> None:
    theirs = FramerRTU(DecodePDU(False))
    for unit, pdu in [
        (1, bytes.fromhex("03 0000 000A")),
        (17, READ),
        (247, bytes.fromhex("06 0001 0003")),
    ]:
        assert RtuFramer().request(unit, pdu) == theirs.encode(pdu, unit, 0)
    # the spec's example: read 10 holding registers of unit 1
    assert RtuFramer().request(1, bytes.fromhex("03 0000 000A")) == bytes.fromhex(
        "01 03 0000 000A C5CD"
    )
    assert crc16_modbus(b"123456789") == 0x4B37


def feed(f: RtuFramer | AsciiFramer, chunks: list[bytes]) -> list[bytes]:
    return [r for ch in chunks if (r := f.receive(ch)) is not None]


GOOD = rtu(1, REPLY)
ECHO = rtu(1, READ)  # our own request, heard back through an echoing adapter

# (case, chunks, replies handed out)
STREAMS = [
    ("whole", [GOOD], [REPLY]),
    ("byte by byte", [bytes([b]) for b in GOOD], [REPLY]),
    ("one noise byte first", [b"\x00" + GOOD], [REPLY]),
    ("noise that looks like our unit", [b"\x01\x01\x01" + GOOD], [REPLY]),
    ("a false start announcing 255 bytes", [b"\x01\x03\xff\x00" + GOOD], [REPLY]),
    ("a false start, then the reply later", [b"\x01\x03\xff", GOOD], [REPLY]),
    ("our echo, then the reply", [ECHO + GOOD], [REPLY]),
    ("another unit's reply first", [rtu(2, REPLY) + GOOD], [REPLY]),
    ("a reply with a CRC error, then a good one", [GOOD[:-1] + b"\x00", GOOD], [REPLY]),
    ("noise after the reply", [GOOD + b"\xff\x00"], [REPLY]),
    ("exception reply", [rtu(1, b"\x83\x02")], [b"\x83\x02"]),
    ("only another unit", [rtu(2, REPLY)], []),
    ("only a CRC error", [GOOD[:-1] + bytes([GOOD[-1] ^ 1])], []),
    ("truncated", [GOOD[:6]], []),
    ("another function code", [rtu(1, bytes.fromhex("04 04 0005 0006"))], []),
]


@pytest.mark.parametrize(
    ("chunks", "replies"), [s[1:] for s in STREAMS], ids=[s[0] for s in STREAMS]
)
def test_rtu_replies(chunks: list[bytes], replies: list[bytes]) -> None:
    assert feed(waiting(), chunks) == replies


def test_pymodbus_decoder_loses_a_reply_behind_one_noise_byte() -> None:
    """Why rtu.py hunts for its own frames: pymodbus' FramerRTU.decode takes the noise byte
    for a unit id, the reply's unit id for a function code, fails the CRC and drops the whole
    buffer, the reply included."""
    used, _, _, pdu = FramerRTU(DecodePDU(False)).decode(b"\x00" + GOOD)
    assert (used, pdu) == (len(GOOD) + 1, b"")
    assert waiting().receive(b"\x00" + GOOD) == REPLY


@given(st.binary(max_size=12), st.lists(st.integers(0, 30), max_size=5))
def test_any_noise_without_our_unit_then_any_split(noise: bytes, cuts: list[int]) -> None:
    noise = noise.replace(b"\x01", b"\x02")  # our unit id would make a false start possible
    stream = noise + GOOD
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert feed(waiting(), chunks) == [REPLY]


def test_nothing_is_taken_after_the_reply_or_before_a_request() -> None:
    f = waiting()
    assert f.receive(GOOD) == REPLY
    assert f.receive(GOOD) is None  # a duplicate: the reply was handed out already
    f.request(1, READ)
    assert f.receive(GOOD[:4]) is None
    f.request(1, READ)  # a new request forgets what came before it
    assert f.receive(GOOD[4:]) is None
    assert f.receive(GOOD) == REPLY


def test_the_buffer_stays_bounded_on_endless_noise() -> None:
    f = waiting()
    for _ in range(200):
        f.receive(b"\x01\x03\xf0" + bytes(range(2, 50)))
    assert len(f.buf) <= 256


def test_timeouts_on_a_serial_port_keep_it_open() -> None:
    f = waiting()
    assert f.expire().close is False
    f.request(1, READ)
    f.receive(b"\x13\x37")
    exp = f.expire()
    assert (exp.close, exp.why, exp.bad_frame) == (False, "garbled reply", True)
    for _ in range(5):
        f.request(1, READ)
        assert not f.expire().close


def test_timeouts_on_a_tcp_stream_close_it() -> None:
    """RTU over TCP: a garbled or partial reply may prefix the next one, and a serial server
    that stopped answering may have lost its own port."""
    f = waiting(stream=True)
    f.receive(GOOD[:5])
    exp = f.expire()
    assert (exp.close, exp.why, exp.bad_frame) == (True, "garbled reply", True)
    f = waiting(stream=True)
    assert not f.expire().close
    f.request(1, READ)
    exp = f.expire()
    assert exp.close and exp.why == f"{MAX_SILENT} timeouts in a row" and not exp.bad_frame
    f = waiting(stream=True)
    f.expire()
    f.request(1, READ)
    assert f.receive(GOOD) == REPLY  # an answer starts the count again
    f.request(1, READ)
    assert not f.expire().close


# --- ASCII -------------------------------------------------------------------------------------
def ascii_frame(unit: int, pdu: bytes, *, lrc: int | None = None) -> bytes:
    body = bytes((unit,)) + pdu
    check = -sum(body) & 0xFF if lrc is None else lrc
    return b":" + (body + bytes((check,))).hex().upper().encode() + b"\r\n"


def test_ascii_request_is_pymodbus_bytes() -> None:
    theirs = FramerAscii(DecodePDU(False))
    assert AsciiFramer().request(1, bytes.fromhex("03 0000 0001")) == b":010300000001FB\r\n"
    assert AsciiFramer().request(9, READ) == theirs.encode(READ, 9, 0)


A_GOOD = ascii_frame(1, REPLY)
ASCII = [
    ("whole", [A_GOOD], [REPLY]),
    ("byte by byte", [bytes([b]) for b in A_GOOD], [REPLY]),
    ("lower-case hex", [A_GOOD.lower()], [REPLY]),
    ("noise first", [b"\x00zz\r\n" + A_GOOD], [REPLY]),
    ("a frame cut off by the next", [A_GOOD[:7] + A_GOOD], [REPLY]),
    ("LRC error, then good", [ascii_frame(1, REPLY, lrc=0), A_GOOD], [REPLY]),
    ("not hex", [b":01ZZ\r\n" + A_GOOD], [REPLY]),
    ("another unit", [ascii_frame(2, REPLY)], []),
    ("exception", [ascii_frame(1, b"\x83\x04")], [b"\x83\x04"]),
]


@pytest.mark.parametrize(("chunks", "replies"), [a[1:] for a in ASCII], ids=[a[0] for a in ASCII])
def test_ascii_replies(chunks: list[bytes], replies: list[bytes]) -> None:
    f = AsciiFramer()
    f.request(1, READ)
    assert feed(f, chunks) == replies
