"""Modbus TCP (MBAP framing) client for the hot path: one connection, one transaction at a time.

Why not pymodbus here: a poll of a Modbus TCP device is 12 bytes out and a few dozen back,
and pymodbus' async transaction layer (lock, ``wait_for`` wrapper task, PDU objects, trace and
log hooks) cost more CPU per request than everything else the agent does with the answer, and
its import (client, datastore, simulator) ~1.5 MB of the gateway's memory. The MBAP header is
seven bytes (Modbus Messaging on TCP/IP Implementation Guide V1.0b, section 3.1.3); this module
frames and checks them and nothing more. pymodbus still serves serial RTU/ASCII and RTU over
TCP through ``drivers/modbus/adapter.py``, and is the peer every test of this module runs
against.

Stream rules (a TCP stream has no resynchronisation point):
- a reply whose transaction id is not the one in flight is a late answer to a request that
  timed out: skipped;
- a header that cannot be Modbus (protocol id != 0, length outside 2..254) means the stream is
  corrupt: the connection is closed and the request fails as a bad frame, so the bus owner
  reconnects on a clean stream.
"""

from __future__ import annotations

import asyncio
import struct
from typing import cast

_HEADER = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
MAX_PDU = 253


class MbapTimeout(Exception):
    """No complete reply within the timeout; ``bad_frame``: bytes came but no valid frame."""

    def __init__(self, bad_frame: bool) -> None:
        self.bad_frame = bad_frame
        super().__init__("garbled reply" if bad_frame else "no response")


class MbapClosed(Exception):
    """The connection is closed (or closed while the request waited)."""


class _Stream(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiting: tuple[int, int, asyncio.Future[bytes]] | None = None
        self.rx_seen = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None
        if self.waiting is not None and not self.waiting[2].done():
            self.waiting[2].set_exception(MbapClosed(str(exc) if exc else "closed by peer"))

    def data_received(self, data: bytes) -> None:
        self.rx_seen = True
        buf = self.buf
        buf += data
        while len(buf) >= 7:
            tid, pid, length, unit = _HEADER.unpack_from(buf)
            if pid != 0 or not 2 <= length <= MAX_PDU + 1:
                self._corrupt()
                return
            end = 6 + length
            if len(buf) < end:
                return
            pdu = bytes(buf[7:end])
            del buf[:end]
            w = self.waiting
            if w is None or w[0] != tid or w[2].done():
                continue
            if w[1] != unit:
                self._corrupt()
                return
            w[2].set_result(pdu)

    def _corrupt(self) -> None:
        self.buf.clear()
        self.lost = True  # abort() reports connection_lost only on the next loop iteration
        if self.waiting is not None and not self.waiting[2].done():
            self.waiting[2].set_exception(MbapTimeout(bad_frame=True))
        if self.transport is not None:
            self.transport.abort()


class MbapClient:
    """One Modbus TCP connection. Not reentrant: the bus owner serializes transactions."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._stream: _Stream | None = None
        self._tid = 0

    @property
    def connected(self) -> bool:
        s = self._stream
        return s is not None and not s.lost and s.transport is not None

    async def connect(self, timeout: float) -> None:
        self.close()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, stream = await loop.create_connection(_Stream, self.host, self.port)
        self._stream = stream

    def close(self) -> None:
        s, self._stream = self._stream, None
        if s is not None and s.transport is not None:
            s.transport.abort()

    async def transact(self, unit: int, pdu: bytes, timeout: float) -> bytes:
        """Send one request PDU to ``unit``; the reply PDU (function code first)."""
        s = self._stream
        if s is None or s.lost or s.transport is None:
            raise MbapClosed("not connected")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        s.waiting = (tid, unit, fut)
        s.rx_seen = False
        s.transport.write(_HEADER.pack(tid, 0, len(pdu) + 1, unit) + pdu)
        timer = loop.call_later(timeout, _expire, fut, s)
        try:
            return await fut
        finally:
            timer.cancel()
            s.waiting = None


def _expire(fut: asyncio.Future[bytes], s: _Stream) -> None:
    if not fut.done():
        fut.set_exception(MbapTimeout(bad_frame=s.rx_seen))
