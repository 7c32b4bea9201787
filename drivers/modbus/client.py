"""What every Modbus client shares (``adapter.py`` builds the one a bus needs): the timing of
a request, the one-request calls on top of ``transact``, and the Modbus TCP client, whose
batches the I/O thread (``mbap_io.py``) runs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from drivers.core.endpoint import Endpoint
from drivers.core.profile import Table
from drivers.device_state import Reason, link_reason
from drivers.modbus import pdu
from drivers.modbus.mbap_io import ENGINE, Batch, Conn
from drivers.modbus.results import NotConnected, Outcome

DEFAULT_TCP_TIMEOUT = 1.0
TURNAROUND_MARGIN = 0.05  # device turnaround + USB-serial latency timer (FTDI: 16 ms default)
MAX_ADU_CHARS = 256 + 8  # longest RTU response + the request that triggered it


def inter_frame_gap(endpoint: Endpoint, configured: float | None) -> float:
    """Silence kept between frames: 3.5 character times, but a fixed 1.75 ms above 19200 baud
    (Modbus over serial line V1.02, section 2.5.1.1). TCP peers need none."""
    if configured is not None:
        return configured
    if endpoint.scheme not in ("rtu", "ascii"):
        return 0.0
    if endpoint.baudrate > 19200:
        return 0.00175
    return 3.5 * endpoint.char_time


def response_timeout(
    endpoint: Endpoint, configured: float | None, chars: int | None = None
) -> float:
    """Timeout for one request: the configured one, else sized from the wire time of ``chars``
    characters (request + response; default the longest ADU) plus a turnaround margin."""
    if configured is not None:
        return configured
    if not endpoint.is_serial:
        return DEFAULT_TCP_TIMEOUT
    n = MAX_ADU_CHARS if chars is None else chars
    if endpoint.scheme == "ascii":
        n = 2 * n + 5  # two hex characters per byte, ':' and CRLF framing
    return max(0.1, n * endpoint.char_time + TURNAROUND_MARGIN)


def request_chars(request: bytes) -> int:
    """RTU characters of ``request`` and its reply (unit id and CRC each), for the timeout."""
    return len(request) + 3 + pdu.expected_length(request) + 3


class Calls:
    """One request at a time, on top of ``transact``."""

    async def transact(
        self, requests: Sequence[tuple[int, bytes]], timeout: float | None = None
    ) -> list[Outcome]:
        raise NotImplementedError

    async def _one(
        self, unit: int, request: bytes, timeout: float | None
    ) -> list[int] | list[bool]:
        (outcome,) = await self.transact([(unit, request)], timeout)
        return pdu.parse(unit, request, outcome.reply())

    async def read(
        self, table: Table, start: int, count: int, unit: int, timeout: float
    ) -> list[int] | list[bool]:
        return await self._one(unit, pdu.read(table, start, count), timeout)

    async def write_registers(
        self, unit: int, address: int, values: Sequence[int], timeout: float
    ) -> None:
        if len(values) == 1:
            await self._one(unit, pdu.write_register(address, values[0]), timeout)
        else:
            await self._one(unit, pdu.write_registers(address, values), timeout)

    async def write_coil(self, unit: int, address: int, value: bool, timeout: float) -> None:
        await self._one(unit, pdu.write_coil(address, value), timeout)


class TcpClient(Calls):
    """Modbus TCP: one connection, its batches run by the I/O thread (``mbap_io.py``)."""

    def __init__(self, endpoint: Endpoint, timeout: float | None) -> None:
        self.url = endpoint.url
        self.host = endpoint.host or ""
        self.port = endpoint.port or 502
        self.timeout = response_timeout(endpoint, timeout)
        self._conn: Conn | None = None

    @property
    def connected(self) -> bool:
        c = self._conn
        return c is not None and not c.closed

    async def connect(self, timeout: float) -> None:
        self.close()
        try:
            sock = await _open(self.host, self.port, timeout)
        except TimeoutError as exc:
            raise NotConnected(self.url, "connect timed out", Reason.TIMEOUT) from exc
        except OSError as exc:
            raise NotConnected(self.url, f"{type(exc).__name__}: {exc}", link_reason(exc)) from exc
        self._conn = ENGINE.register(sock, self.url)

    def close(self) -> None:
        c, self._conn = self._conn, None
        if c is not None:
            ENGINE.close(c)

    async def transact(
        self, requests: Sequence[tuple[int, bytes]], timeout: float | None = None
    ) -> list[Outcome]:
        c = self._conn
        if c is None or c.closed:
            raise NotConnected(self.url, "not connected")
        loop = asyncio.get_running_loop()
        t = self.timeout if timeout is None else timeout
        b = Batch(requests, t, loop, loop.create_future())
        ENGINE.start(c, b)
        try:
            return await b.fut
        except asyncio.CancelledError:
            ENGINE.abandon(c, b)
            raise

    def cut(self) -> None:
        if self._conn is not None:
            ENGINE.cut(self._conn)


async def _open(host: str, port: int, timeout: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"cannot resolve {host}")
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
            # a request is one small segment: Nagle would hold it for the previous reply's ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        raise error
