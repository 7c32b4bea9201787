"""Modbus RTU and ASCII framing for a master, sans-I/O: bytes in, the reply out.

Modbus over Serial Line V1.02: RTU frames are ``unit, PDU, CRC-16`` (section 2.5.1, CRC low
byte first), ASCII frames ``':' hex(unit, PDU, LRC) CR LF`` (section 2.5.2). Both framers
here keep the one request in flight, take whatever the line delivers (split anywhere, behind
noise, echoes of our own frames, other units' replies) and return the reply PDU once a frame
from the unit asked, with the function code asked (or its exception), passes its check.
The PDU layer (``pdu.py``) says how long a reply is: RTU frames carry no length.

Why not pymodbus' framers. ``FramerRTU.decode`` is sans-I/O too, but it sizes frames with
pymodbus' whole PDU class registry, takes a frame from any unit, and on a CRC mismatch at a
false start it discards the whole buffer, the good reply behind the noise included (one noise
byte before a reply is enough: ``tests/drivers/modbus/test_rtu.py`` shows it). A master knows
the unit and function code it waits for; hunting for exactly those, one byte at a time past a
false start, keeps every reply a noisy line lets through. Its interface also changed across
3.x minors (3.12 broke chunked USB frames). The CRC is checked against pymodbus' in the tests.

Supervision. On a local serial port a timeout leaves the port open: the next request starts on
a clean buffer. Over a TCP stream (RTU over TCP through a serial server) a garbled or partial
reply may prefix the next one, and a server that stopped answering may have lost its own
port: a timeout with bytes received, or ``MAX_SILENT`` in a row, closes the connection.
"""

from __future__ import annotations

from drivers.checksums import crc16_modbus
from drivers.modbus import pdu
from drivers.modbus.results import MAX_SILENT, Expiry

MAX_ADU = 256  # longest RTU frame (section 2.5.1.1)


class _LineFramer:
    """What the RTU and ASCII framers share: the request in flight and the supervision."""

    __slots__ = ("buf", "fc", "rx_seen", "silent", "stream", "unit", "waiting")

    def __init__(self, *, stream: bool = False) -> None:
        self.stream = stream  # a TCP connection (RTU over TCP), not a serial port
        self.buf = bytearray()
        self.unit = -1
        self.fc = -1
        self.waiting = False
        self.rx_seen = False  # bytes arrived since the request went out
        self.silent = 0  # timeouts in a row with nothing received

    def _start(self, unit: int, request: bytes) -> None:
        self.buf.clear()  # what came before the request cannot be its reply
        self.unit, self.fc = unit, request[0]
        self.waiting = True
        self.rx_seen = False

    def _done(self) -> None:
        self.waiting = False
        self.silent = 0
        self.buf.clear()

    def expire(self) -> Expiry:
        """The request in flight got no reply within its timeout."""
        self.waiting = False
        bad = self.rx_seen
        self.silent = 0 if bad else self.silent + 1
        if self.stream and bad:
            return Expiry(True, "garbled reply", True)
        if self.stream and self.silent >= MAX_SILENT:
            return Expiry(True, f"{self.silent} timeouts in a row", False)
        return Expiry(False, "garbled reply" if bad else "no response", bad)


class RtuFramer(_LineFramer):
    __slots__ = ()

    def request(self, unit: int, request: bytes) -> bytes:
        """The frame of ``request`` (a PDU) to ``unit``; its reply is now awaited."""
        self._start(unit, request)
        frame = bytes((unit,)) + request
        return frame + crc16_modbus(frame).to_bytes(2, "little")

    def receive(self, data: bytes) -> bytes | None:
        """Take the bytes that arrived; the reply PDU once a valid one is complete."""
        if not self.waiting:
            return None  # after the reply, before the next request: discarded with it
        if data:
            self.rx_seen = True
        buf = self.buf
        buf += data
        n = len(buf)
        unit, fc = self.unit, self.fc
        hold = -1  # the first candidate still incomplete: kept for more bytes
        for i in range(n - 1):
            if buf[i] != unit or buf[i + 1] & 0x7F != fc:
                continue
            size = pdu.reply_length(buf[i + 1 : i + 3])
            if size < 0:  # the byte count is still to come
                hold = i if hold < 0 else hold
                break
            end = i + 1 + size + 2
            if size == 0 or end - i > MAX_ADU:
                continue
            if end > n:
                hold = i if hold < 0 else hold
                continue  # a later candidate may be complete: a false start held it back
            if crc16_modbus(buf[i : end - 2]) == buf[end - 2] | buf[end - 1] << 8:
                reply = bytes(buf[i + 1 : end - 2])
                self._done()
                return reply
        # nothing complete and valid: drop what cannot start a reply any more
        keep = hold if hold >= 0 else (n - 1 if n and buf[-1] == unit else n)
        keep = max(keep, n - MAX_ADU)
        del buf[:keep]
        return None


class AsciiFramer(_LineFramer):
    __slots__ = ()

    def request(self, unit: int, request: bytes) -> bytes:
        self._start(unit, request)
        body = bytes((unit,)) + request
        return b":" + (body + bytes((_lrc(body),))).hex().upper().encode() + b"\r\n"

    def receive(self, data: bytes) -> bytes | None:
        if not self.waiting:
            return None
        if data:
            self.rx_seen = True
        buf = self.buf
        buf += data
        while True:
            start = buf.find(b":")
            if start < 0:
                buf.clear()
                return None
            end = buf.find(b"\r\n", start)
            nxt = buf.find(b":", start + 1)
            if end < 0 or 0 <= nxt < end:  # incomplete, or a new frame started inside it
                if nxt < 0:
                    del buf[:start]
                    if len(buf) > 2 * MAX_ADU + 3:
                        buf.clear()
                    return None
                del buf[:nxt]
                continue
            frame = _unhex(buf[start + 1 : end])
            del buf[: end + 2]
            if (
                frame is not None
                and len(frame) >= 3
                and _lrc(frame[:-1]) == frame[-1]
                and frame[0] == self.unit
                and frame[1] & 0x7F == self.fc
            ):
                reply = frame[1:-1]
                self._done()
                return reply


def _lrc(data: bytes) -> int:
    """Longitudinal redundancy check: two's complement of the byte sum (section 2.5.2.2)."""
    return -sum(data) & 0xFF


def _unhex(text: bytes | bytearray) -> bytes | None:
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
