"""Byte links for the serial drivers: a local serial port or a serial server over TCP.

``serial:///dev/ttyUSB1?baudrate=2400&parity=E`` opens the port with pyserial-asyncio-fast;
``serial+tcp://host:4002`` connects to a serial-to-Ethernet server in raw (TCP socket) mode.
Every I/O failure surfaces as ``LinkError`` so the bus has one thing to catch for "reopen".
"""

from __future__ import annotations

import asyncio
import contextlib
import termios

from agent.config.endpoint import Endpoint
from drivers.device_state import Reason, link_reason

_PARITY = {"N": "N", "E": "E", "O": "O"}


class LinkError(OSError):
    """The port or connection failed (unplugged, refused, closed by the peer); ``kind``: what
    it means for the devices behind it."""

    def __init__(self, url: str, reason: str, kind: Reason = Reason.PORT_GONE) -> None:
        self.url = url
        self.reason = reason
        self.kind = kind
        super().__init__(f"{url}: {reason}")


class Link:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        ep = self.endpoint
        try:
            if ep.scheme == "serial+tcp":
                self._reader, self._writer = await asyncio.open_connection(ep.host, ep.port)
            else:
                import serial_asyncio_fast

                self._reader, self._writer = await serial_asyncio_fast.open_serial_connection(
                    url=ep.path,
                    baudrate=ep.baudrate,
                    parity=_PARITY[ep.parity],
                    stopbits=ep.stopbits,
                    bytesize=ep.bytesize,
                    exclusive=True,
                )
        except (OSError, ValueError, termios.error) as exc:
            # SerialException is an OSError; ValueError: bad settings; termios.error: settings
            # the tty refuses (a pty rejects parity, some adapters odd baud rates)
            raise LinkError(ep.url, str(exc), self._kind(exc)) from exc

    def _kind(self, exc: BaseException | None) -> Reason:
        return link_reason(exc, serial=self.endpoint.scheme != "serial+tcp")

    async def close(self) -> None:
        w, self._writer, self._reader = self._writer, None, None
        if w is not None:
            w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.wait_closed(), 1.0)

    def discard_input(self) -> bytes:
        """Bytes that arrived unasked (line noise, late answers): taken out before a request."""
        r = self._reader
        if r is None:
            return b""
        # StreamReader has no public "read what is buffered without waiting"; its _buffer has
        # been a bytearray since asyncio began, and a missing one only means nothing to discard.
        pending = getattr(r, "_buffer", None)
        if not pending:
            return b""
        buf = bytes(pending)
        pending.clear()
        return buf

    async def send(self, data: bytes) -> None:
        if self._writer is None:
            raise LinkError(self.endpoint.url, "not open", self._kind(None))
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as exc:
            raise LinkError(self.endpoint.url, f"write failed: {exc}", self._kind(exc)) from exc

    async def receive(self, timeout: float) -> bytes:
        """Whatever has arrived (at least one byte); TimeoutError if nothing within timeout."""
        if self._reader is None:
            raise LinkError(self.endpoint.url, "not open", self._kind(None))
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                data = await self._reader.read(4096)
        except TimeoutError:
            raise  # an OSError subclass, but it means silence, not a broken link
        except OSError as exc:
            raise LinkError(self.endpoint.url, f"read failed: {exc!r}", self._kind(exc)) from exc
        if not data:
            raise LinkError(self.endpoint.url, "closed by the peer (EOF)", self._kind(None))
        return data
