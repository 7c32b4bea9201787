"""drivers/rs485.py sans I/O: the echo check as byte tables, and the mapping of the bus's
``[buses.rs485]`` options onto pyserial's kernel RS-485 settings."""

from __future__ import annotations

import pytest
from serial.rs485 import RS485Settings

from drivers.core.config import Rs485Config
from drivers.rs485 import EchoCheck, EchoMismatch, rs485_settings

REQ = bytes.fromhex("01 03 00 00 00 02 c4 0b")
REPLY = bytes.fromhex("01 03 04 00 05 00 06 0b f2")

# (case, chunks as they arrive, what feed passes on in total)
GOOD = [
    ("echo alone", [REQ], b""),
    ("echo then reply, one chunk", [REQ + REPLY], REPLY),
    ("byte by byte", [bytes([b]) for b in REQ + REPLY[:3]], REPLY[:3]),
    ("split inside the echo", [REQ[:3], REQ[3:] + REPLY[:1], REPLY[1:]], REPLY),
]


@pytest.mark.parametrize(("chunks", "out"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_the_echo_is_verified_and_dropped(chunks: list[bytes], out: bytes) -> None:
    check = EchoCheck()
    check.sent(REQ)
    assert b"".join(check.feed(c) for c in chunks) == out
    assert check.pending == 0 and check.failed is None


# (case, chunks, offset of the first wrong byte, bytes heard up to it)
BAD = [
    ("a byte flipped", [REQ[:2] + b"\xff" + REQ[3:]], 2, REQ[:2] + b"\xff"),
    ("no echo: the reply came", [REPLY], 2, REPLY[:3]),
    ("wrong in a later chunk", [REQ[:5], b"\x00\x00"], 5, REQ[:5] + b"\x00"),
    ("collision in the first byte", [b"\x00" + REQ[1:]], 0, b"\x00"),
]


@pytest.mark.parametrize(
    ("chunks", "offset", "heard"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_a_wrong_byte_is_named(chunks: list[bytes], offset: int, heard: bytes) -> None:
    check = EchoCheck()
    check.sent(REQ)
    with pytest.raises(EchoMismatch) as info:
        for c in chunks:
            check.feed(c)
    exc = info.value
    assert (exc.offset, exc.heard, exc.sent) == (offset, heard, REQ)
    assert f"at byte {offset}: sent {REQ.hex(' ')}, read back {heard.hex(' ')}" in exc.reason
    assert "rs485.echo = false" in exc.reason
    # the rest of the failed exchange is swallowed; the next frame starts afresh
    assert check.feed(REPLY) == b"" and check.pending == 0
    check.sent(REQ)
    assert check.feed(REQ + REPLY) == REPLY


def test_missing_echo_says_how_much_came() -> None:
    check = EchoCheck()
    check.sent(REQ)
    check.feed(REQ[:3])
    assert check.pending == 5
    exc = check.no_echo(0.108)
    assert "within 108 ms, 3 of 8 bytes read back" in exc.reason and exc.heard == REQ[:3]


def test_nothing_expected_passes_everything() -> None:
    assert EchoCheck().feed(REPLY) == REPLY


# (options, rts_level_for_tx, rts_level_for_rx, loopback, delay_before_tx, delay_before_rx)
MAPPING = [
    ({"kernel": True}, True, False, False, 0.0, 0.0),
    ({"kernel": True, "echo": True}, True, False, True, 0.0, 0.0),
    (
        {"kernel": True, "rts_on_send": "low", "rts_after_send": "high"},
        False,
        True,
        False,
        0.0,
        0.0,
    ),
    (
        {"kernel": True, "delay_before_send_ms": 2, "delay_after_send_ms": 100},
        True,
        False,
        False,
        0.002,
        0.1,
    ),
]


@pytest.mark.parametrize(("opts", "tx", "rx", "loop", "before", "after"), MAPPING)
def test_options_map_onto_pyserials_settings(
    opts: dict[str, object], tx: bool, rx: bool, loop: bool, before: float, after: float
) -> None:
    s = rs485_settings(Rs485Config.model_validate(opts))
    assert isinstance(s, RS485Settings)
    assert (s.rts_level_for_tx, s.rts_level_for_rx, s.loopback) == (tx, rx, loop)
    assert (s.delay_before_tx, s.delay_before_rx) == (before, after)
    # pyserial writes int(delay * 1000) into the kernel's whole-millisecond fields
    assert int(s.delay_before_tx * 1000) == opts.get("delay_before_send_ms", 0)
    assert int(s.delay_before_rx * 1000) == opts.get("delay_after_send_ms", 0)
