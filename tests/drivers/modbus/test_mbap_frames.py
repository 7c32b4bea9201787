"""The MBAP stream rules (drivers/modbus/mbap.py) as byte tables, without a socket: bytes fed
one at a time or split anywhere, garbage, wrong transaction / unit id, length fields 0, 1 and
65535, late replies to timed-out requests, replies nobody asked for. The socket tests in
test_mbap.py run the same rules through the I/O thread against real peers."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.mbap import MbapConnection, StreamBroken
from drivers.modbus.results import MAX_SILENT

READ = bytes.fromhex("03 0000 0001")  # FC03, one register
REPLY = bytes.fromhex("03 02 0007")


def adu(tid: int, unit: int, pdu: bytes, *, pid: int = 0, length: int | None = None) -> bytes:
    n = len(pdu) + 1 if length is None else length
    return struct.pack(">HHHB", tid, pid, n, unit) + pdu


def sent(unit: int = 1) -> MbapConnection:
    """A connection with one request to ``unit`` in flight (transaction id 1)."""
    c = MbapConnection()
    assert c.send(unit, READ) == adu(1, unit, READ)
    return c


def test_request_adus_number_transactions() -> None:
    c = MbapConnection()
    assert c.send(17, READ) == bytes.fromhex("0001 0000 0006 11 03 0000 0001")
    c.receive(adu(1, 17, REPLY))
    assert c.send(17, READ)[:2] == b"\x00\x02"
    c.tid = 0xFFFF
    assert c.send(17, READ)[:2] == b"\x00\x00"  # wraps


def feed(c: MbapConnection, chunks: list[bytes]) -> list[bytes]:
    """Every reply ``receive`` hands out while ``chunks`` arrive."""
    return [r for ch in chunks if (r := c.receive(ch)) is not None]


# (case, chunks as they arrive, the replies handed out)
STREAMS = [
    ("whole", [adu(1, 1, REPLY)], [REPLY]),
    ("byte by byte", [bytes([b]) for b in adu(1, 1, REPLY)], [REPLY]),
    ("split in the header", [adu(1, 1, REPLY)[:3], adu(1, 1, REPLY)[3:]], [REPLY]),
    ("split in the PDU", [adu(1, 1, REPLY)[:9], adu(1, 1, REPLY)[9:]], [REPLY]),
    ("late reply first, same chunk", [adu(0x77, 1, REPLY) + adu(1, 1, REPLY)], [REPLY]),
    (
        "late reply split across",
        [adu(9, 1, REPLY)[:4], adu(9, 1, REPLY)[4:] + adu(1, 1, REPLY)],
        [REPLY],
    ),
    (
        "unsolicited before and after",
        [adu(0, 1, REPLY) + adu(1, 1, REPLY) + adu(0x2001, 1, REPLY)],
        [REPLY],
    ),
    ("a second copy of the reply", [adu(1, 1, REPLY), adu(1, 1, REPLY)], [REPLY]),
    ("nothing for us", [adu(5, 1, REPLY), adu(6, 1, REPLY)], []),
]


@pytest.mark.parametrize(
    ("chunks", "replies"), [s[1:] for s in STREAMS], ids=[s[0] for s in STREAMS]
)
def test_the_reply_to_the_request_in_flight_comes_out_once(
    chunks: list[bytes], replies: list[bytes]
) -> None:
    c = sent()
    assert feed(c, chunks) == replies
    assert c.waiting is not bool(replies)


@given(
    st.lists(st.integers(0, 40), max_size=6),
    st.lists(st.sampled_from([0, 2, 9, 0x2001]), max_size=3),
)
def test_any_split_of_late_frames_then_the_reply(cuts: list[int], late: list[int]) -> None:
    stream = b"".join(adu(t, 1, REPLY) for t in late) + adu(1, 1, REPLY)
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    c = sent()
    assert feed(c, chunks) == [REPLY]
    assert c.late == len(late) and not c.buf


# (case, bytes that arrive): the stream position is lost, the connection must close
BROKEN = [
    ("protocol id 7", adu(1, 1, REPLY, pid=7)),
    ("length 0", adu(1, 1, b"", length=0)),
    ("length 1", adu(1, 1, b"", length=1)),
    ("length 65535", adu(1, 1, REPLY, length=65535)),
    ("length 256", adu(1, 1, REPLY, length=256)),
    ("garbage", b"\x13\x37 this is not modbus \xff\xfe\x00"),
    ("another unit's reply", adu(1, 9, REPLY)),
]


@pytest.mark.parametrize("raw", [b[1] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_corrupt_stream_is_broken(raw: bytes) -> None:
    c = sent()
    with pytest.raises(StreamBroken) as info:
        feed(c, [bytes([b]) for b in raw])  # however it arrives
    assert info.value.why


def test_corruption_after_the_reply_keeps_the_reply_and_breaks_next() -> None:
    c = sent()
    assert c.receive(adu(1, 1, REPLY) + adu(2, 1, REPLY, pid=3)) == REPLY
    c.send(1, READ)
    with pytest.raises(StreamBroken, match="protocol 3"):
        c.receive(b"")


def test_a_late_reply_to_a_timed_out_request_is_skipped() -> None:
    c = sent()
    assert c.expire().close is False
    c.send(1, READ)  # transaction 2
    assert c.receive(adu(1, 1, bytes.fromhex("03 02 0001"))) is None  # tid 1: too late
    assert c.receive(adu(2, 1, REPLY)) == REPLY
    assert c.late == 1


def test_timeouts_in_a_row_close_the_connection() -> None:
    c = sent()
    first = c.expire()
    assert (first.close, first.why, first.bad_frame) == (False, "no response", False)
    c.send(1, READ)
    second = c.expire()
    assert second.close and second.why == f"{MAX_SILENT} timeouts in a row"
    c = sent()
    c.expire()
    c.send(1, READ)
    c.receive(adu(2, 1, REPLY))  # a reply in between starts the count again
    c.send(1, READ)
    assert not c.expire().close


def test_a_partial_frame_older_than_the_timeout_closes() -> None:
    c = sent()
    assert c.receive(adu(1, 1, REPLY)[:8]) is None
    exp = c.expire()
    assert (exp.close, exp.why, exp.bad_frame) == (
        True,
        "partial frame older than the timeout",
        True,
    )


def test_bytes_without_a_reply_make_the_timeout_a_bad_frame() -> None:
    c = sent()
    c.receive(adu(5, 1, REPLY))  # someone else's frame, whole
    exp = c.expire()
    assert (exp.close, exp.why, exp.bad_frame) == (False, "garbled reply", True)


def test_a_request_not_fully_written_closes() -> None:
    c = sent()
    exp = c.expire(unsent=True)
    assert exp.close and "peer stopped reading" in exp.why and not exp.bad_frame
