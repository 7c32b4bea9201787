"""Modbus TCP (MBAP framing) client for the hot path: one connection, one batch at a time.

Why not pymodbus here: a poll of a Modbus TCP device is 12 bytes out and a few dozen back,
and pymodbus' async transaction layer (lock, ``wait_for`` wrapper task, PDU objects, trace and
log hooks) cost more CPU per request than everything else the agent does with the answer, and
its import (client, datastore, simulator) ~1.5 MB of the gateway's memory. The MBAP header is
seven bytes (Modbus Messaging on TCP/IP Implementation Guide V1.0b, section 3.1.3); this module
frames and checks them and nothing more. pymodbus still serves serial RTU/ASCII and RTU over
TCP through ``drivers/modbus/adapter.py``, and is the peer every test of this module runs
against.

The bytes move on the I/O thread of ``drivers/modbus/mbap_io.py`` (why, and the stream rules,
are there); this is the bus owner's side: connect, run a batch, close.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from drivers.modbus.mbap_io import ENGINE, Batch, Conn, MbapClosed, MbapTimeout, Outcome

__all__ = ["MbapClient", "MbapClosed", "MbapTimeout", "Outcome"]


class MbapClient:
    """One Modbus TCP connection. Not reentrant: the bus owner serializes batches."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._conn: Conn | None = None

    @property
    def connected(self) -> bool:
        c = self._conn
        return c is not None and not c.closed

    async def connect(self, timeout: float) -> None:
        self.close()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            error: OSError = OSError(f"cannot resolve {self.host}")
            for family, kind, proto, _, addr in infos:
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, addr)
                except OSError as exc:
                    sock.close()
                    error = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                break
            else:
                raise error
        # a request is one small segment: Nagle would hold it for the previous reply's ACK
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = ENGINE.register(sock)

    def close(self) -> None:
        c, self._conn = self._conn, None
        if c is not None:
            ENGINE.close(c)

    async def batch(self, reqs: Sequence[tuple[int, bytes]], timeout: float) -> list[Outcome]:
        """Send the request PDUs ``(unit, pdu)`` one after the other, each with ``timeout``; one
        outcome per request sent. The batch stops after a timeout or a lost link, so the list
        is shorter than ``reqs`` then, and its last outcome holds that error."""
        c = self._conn
        if c is None or c.closed:
            raise MbapClosed("not connected")
        loop = asyncio.get_running_loop()
        b = Batch(reqs, timeout, loop, loop.create_future())
        ENGINE.start(c, b)
        try:
            return await b.fut
        except asyncio.CancelledError:
            ENGINE.abandon(c, b)
            raise

    def cut(self) -> None:
        """The running batch ends after its request in flight (a write is waiting)."""
        if self._conn is not None:
            ENGINE.cut(self._conn)

    async def transact(self, unit: int, pdu: bytes, timeout: float) -> bytes:
        """Send one request PDU to ``unit``; the reply PDU (function code first)."""
        return (await self.batch([(unit, pdu)], timeout))[0].result()
