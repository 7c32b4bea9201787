"""Byte links of the serial lines: a local serial port, or a serial server over TCP.

The I/O shell under Modbus RTU / ASCII (``drivers/modbus/line.py``) and the serial protocols
(``drivers/serial/session.py``) alike: it opens, sends, receives and closes, and keeps no
protocol rule of its own (the framings are sans-I/O).

``rtu:///dev/ttyUSB0?baudrate=9600&parity=E`` and ``serial:///dev/ttyUSB1?baudrate=2400``
open the port with pyserial-asyncio-fast; ``rtu+tcp://host:4001`` and
``serial+tcp://host:4002`` connect to a serial-to-Ethernet server in raw (TCP socket) mode.
Every I/O failure surfaces as ``LinkError`` so the bus has one thing to catch for "reopen".

RS-485 options (``[buses.rs485]``, drivers/rs485.py): the kernel RS-485 mode is set right after
the port opens (a port that refuses it fails the open with the reason); with ``echo`` each
``send`` returns only once the frame has been read back and verified byte for byte, so the
reply's timeout starts when the frame has left, as on an adapter without echo. A wrong echo
raises ``EchoMismatch``, none ``NoEcho`` (both ``EchoError``, not ``LinkError``: the port is
fine, the exchange failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import termios
from typing import TYPE_CHECKING

from drivers.core.endpoint import Endpoint
from drivers.device_state import Reason, link_reason
from drivers.rs485 import ECHO_MARGIN, EchoCheck, EchoError, Rs485Unsupported, apply_kernel_mode

if TYPE_CHECKING:
    from drivers.core.config import Rs485Config

log = logging.getLogger("cityedge.bus")

_PARITY = {"N": "N", "E": "E", "O": "O"}
TCP_SCHEMES = frozenset({"rtu+tcp", "serial+tcp"})


class LinkError(OSError):
    """The port or connection failed (unplugged, refused, closed by the peer); ``kind``: what
    it means for the devices behind it."""

    def __init__(self, url: str, reason: str, kind: Reason = Reason.PORT_GONE) -> None:
        self.url = url
        self.reason = reason
        self.kind = kind
        super().__init__(f"{url}: {reason}")


class Link:
    def __init__(self, endpoint: Endpoint, rs485: Rs485Config | None = None) -> None:
        self.endpoint = endpoint
        self.rs485 = rs485
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._echo = EchoCheck() if rs485 is not None and rs485.echo else None
        self._echo_failing = False  # log the first echo failure of a run, and the recovery
        self._after_echo = b""  # reply bytes that came in the same chunk as the echo's end

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        ep = self.endpoint
        try:
            if ep.scheme in TCP_SCHEMES:
                self._reader, self._writer = await asyncio.open_connection(ep.host, ep.port)
            else:
                self._reader, self._writer = await _open_serial(ep)
        except (OSError, ValueError, termios.error) as exc:
            # SerialException is an OSError; ValueError: bad settings; termios.error: settings
            # the tty refuses (a pty rejects parity, some adapters odd baud rates)
            raise LinkError(ep.url, str(exc), self._kind(exc)) from exc
        if ep.scheme not in TCP_SCHEMES:
            try:
                apply_kernel_mode(self._writer.transport.serial, self.rs485)  # type: ignore[attr-defined]
            except Rs485Unsupported as exc:
                await self.close()
                raise LinkError(ep.url, exc.reason, Reason.PORT_GONE) from exc

    @property
    def down_reason(self) -> Reason:
        """What a closed link means for the devices behind it."""
        return self._kind(None)

    def _kind(self, exc: BaseException | None) -> Reason:
        return link_reason(exc, serial=self.endpoint.scheme not in TCP_SCHEMES)

    def close_now(self) -> None:
        """Close at once: a serial port is released before this returns, so the next owner
        (a reconnect, the next setting of a scan) can open it exclusively right away."""
        w, self._writer, self._reader = self._writer, None, None
        self._after_echo = b""
        if w is None:
            return
        port = getattr(w.transport, "serial", None)
        if port is None:
            w.close()
            return
        # pyserial-asyncio-fast closes the port later, on an executor thread; the lock must
        # go now. Its own close then finds the port closed (pyserial's close is idempotent).
        w.transport.abort()
        with contextlib.suppress(Exception):
            port.close()

    async def close(self) -> None:
        self.close_now()
        await asyncio.sleep(0)  # let the transport's connection_lost run

    def discard_input(self) -> bytes:
        """Bytes that arrived unasked (line noise, late answers): taken out before a request."""
        buf, self._after_echo = self._after_echo, b""
        r = self._reader
        # StreamReader has no public "read what is buffered without waiting"; its _buffer has
        # been a bytearray since asyncio began, and a missing one only means nothing to discard.
        pending = getattr(r, "_buffer", None) if r is not None else None
        if pending:
            buf += bytes(pending)
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
        if self._echo is not None:
            await self._read_echo(data)

    async def _read_echo(self, data: bytes) -> None:
        check = self._echo
        assert check is not None and self._reader is not None
        check.sent(data)
        self._after_echo = b""
        wait = len(data) * self.endpoint.char_time + ECHO_MARGIN
        failure: EchoError | None = None
        try:
            async with asyncio.timeout(wait):
                while check.pending:
                    chunk = await self._reader.read(4096)
                    if not chunk:
                        raise LinkError(
                            self.endpoint.url, "closed by the peer (EOF)", self._kind(None)
                        )
                    self._after_echo += check.feed(chunk)
        except TimeoutError:
            failure = check.no_echo(wait)
        except EchoError as exc:
            failure = exc
        except LinkError:
            raise
        except OSError as exc:
            raise LinkError(self.endpoint.url, f"read failed: {exc!r}", self._kind(exc)) from exc
        if failure is not None:
            if not self._echo_failing:
                log.warning("%s: %s", self.endpoint.url, failure.reason)
            self._echo_failing = True
            raise failure
        if self._echo_failing:
            self._echo_failing = False
            log.info("%s: the frames' echo is right again", self.endpoint.url)

    async def receive(self, timeout: float) -> bytes:
        """Whatever has arrived (at least one byte); TimeoutError if nothing within timeout."""
        if self._reader is None:
            raise LinkError(self.endpoint.url, "not open", self._kind(None))
        if self._after_echo:
            data, self._after_echo = self._after_echo, b""
            return data
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


async def _open_serial(ep: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """serial_asyncio_fast's open_serial_connection, with the port closed when the transport
    cannot be set up: the library opens and locks the port, then its transport re-applies the
    settings (a timeout setter), which a tty may refuse (EINVAL for parity on a pty); the open
    port was then only reachable from the traceback and stayed locked until the garbage
    collector ran, so the next attempt (a reconnect, a scan's next setting) found it busy."""
    import serial
    import serial_asyncio_fast

    loop = asyncio.get_running_loop()
    port = await loop.run_in_executor(
        None,
        lambda: serial.serial_for_url(
            ep.path,
            baudrate=ep.baudrate,
            parity=_PARITY[ep.parity],
            stopbits=ep.stopbits,
            bytesize=ep.bytesize,
            exclusive=True,
        ),
    )
    try:
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await serial_asyncio_fast.connection_for_serial(loop, lambda: protocol, port)
    except BaseException:
        port.close()
        raise
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
