"""Modbus TCP framing and transaction pairing, sans-I/O: bytes in, the reply out.

The MBAP header is seven bytes (Modbus Messaging on TCP/IP Implementation Guide V1.0b,
section 3.1.3): transaction id, protocol id (0), length (unit id + PDU), unit id. A master
keeps one request in flight per connection (many TCP-to-RS-485 gateways cannot queue more),
so pairing is: the reply carries the transaction id of the request in flight.

:class:`MbapConnection` is the whole rule book of one TCP stream, with no socket and no clock:
``send(unit, pdu)`` returns the bytes to write, ``receive(data)`` takes whatever arrived
(split anywhere: one byte at a time, three frames at once) and returns the reply PDU once it
is complete, ``expire()`` says what a timeout means for the stream. The I/O thread
(``mbap_io.py``) only moves bytes and keeps the clock; the tests feed byte tables.

Stream rules (a TCP stream has no resynchronisation point):

- a frame whose transaction id is not the one in flight is a late answer to a request that
  timed out (or one nobody asked for): skipped, counted in ``late``;
- a header that cannot be Modbus (protocol id != 0, length outside 2..254) or a reply from
  another unit id means the stream position is lost: ``StreamBroken``, the connection must be
  closed, and the request in flight fails as a bad frame;
- link supervision (issue 15): a timeout with part of a frame buffered (a peer that sent half a
  reply and went quiet), ``MAX_SILENT`` timeouts in a row with no reply of ours in between (a
  peer that accepted and stopped reading, a frozen process), or a request still not fully
  written when its timeout passed (the peer stopped reading) close the connection as well.
  Keeping such a socket only keeps the bus dead.
"""

from __future__ import annotations

import struct

from drivers.modbus.results import MAX_SILENT, Expiry

HEADER = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
MAX_PDU = 253


class StreamBroken(Exception):
    """The stream cannot be read any further: close the connection. A bad frame for the
    request in flight (the peer did send something)."""

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(why)


class MbapConnection:
    """One Modbus TCP connection as its master sees it, one request in flight at a time."""

    __slots__ = ("buf", "late", "rx_seen", "silent", "tid", "unit", "waiting")

    def __init__(self) -> None:
        self.buf = bytearray()  # the start of a frame not complete yet
        self.tid = 0  # transaction id of the last request sent
        self.unit = -1  # its unit id
        self.waiting = False  # a request is in flight
        self.rx_seen = False  # bytes arrived since it was sent
        self.silent = 0  # timeouts in a row since the last reply of ours
        self.late = 0  # frames skipped: late replies, replies nobody asked for

    def send(self, unit: int, pdu: bytes) -> bytes:
        """The ADU of request ``pdu`` to ``unit``; it is now the one in flight."""
        self.tid = (self.tid + 1) & 0xFFFF
        self.unit = unit
        self.waiting = True
        self.rx_seen = False
        return HEADER.pack(self.tid, 0, len(pdu) + 1, unit) + pdu

    def receive(self, data: bytes) -> bytes | None:
        """Take the bytes that arrived; the reply PDU to the request in flight once it is
        complete, else None. Raises StreamBroken (close the connection)."""
        if self.waiting and data:
            self.rx_seen = True
        buf: bytes | bytearray = self.buf
        if not buf:
            buf = data  # the usual case: whole replies in one segment, parsed without copies
        else:
            buf += data
        reply = None
        pos = 0
        while len(buf) - pos >= 7:
            tid, pid, length, unit = HEADER.unpack_from(buf, pos)
            if pid != 0 or not 2 <= length <= MAX_PDU + 1:
                if reply is None:
                    self.buf = bytearray()
                    raise StreamBroken(f"corrupt MBAP header (protocol {pid}, length {length})")
                break  # after the reply: found again (and raised) on the next call
            end = pos + 6 + length
            if len(buf) < end:
                break
            if self.waiting and tid == self.tid:
                if unit != self.unit:
                    self.buf = bytearray()
                    raise StreamBroken(f"reply from unit {unit}, not {self.unit}")
                reply = bytes(buf[pos + 7 : end])
                self.waiting = False
                self.silent = 0
            else:
                self.late += 1
            pos = end
        if isinstance(buf, bytearray):
            del buf[:pos]
        elif pos < len(buf):
            self.buf = bytearray(buf[pos:])
        return reply

    def expire(self, *, unsent: bool = False) -> Expiry:
        """The request in flight got no reply within its timeout (``unsent``: part of it was
        still not written). Whatever answers it later is skipped as late."""
        self.waiting = False
        self.silent += 1
        if unsent:
            why = "request not sent within the timeout (the peer stopped reading)"
            return Expiry(True, why, False)
        if self.buf:  # half a frame, then nothing for a whole timeout: position unknown
            return Expiry(True, "partial frame older than the timeout", True)
        if self.silent >= MAX_SILENT:
            return Expiry(True, f"{self.silent} timeouts in a row", self.rx_seen)
        return Expiry(False, "garbled reply" if self.rx_seen else "no response", self.rx_seen)
