"""A simulated RS-485 line between two pseudo-terminals, for tests, benchmarks and demos.

    client (pyserial) ── pty A ══ relay ══ pty B ── server (pymodbus ModbusSerialServer)

Each side gets a real tty path (``client_path`` is a symlink so a test can "unplug" the
adapter and plug a new one in under the same name, like udev does for /dev/serial/by-id). The
relay, running on the event loop, can pace bytes at a baud rate (each chunk occupies the line
for ``len × char_time`` plus ``frame_gap`` of silence, both directions share the half-duplex
line, so a device cannot answer before the request is clocked in), rewrite or drop traffic
and inject garbage towards the client. No socat needed, no busy loop: ``add_reader`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import tty
from collections.abc import Callable

Filter = Callable[[bytes], bytes | None]  # return None to drop the chunk


class _Pty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line discipline: bytes pass through untouched
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class PtyWire:
    """Two ptys joined by a relay. Use ``async with PtyWire() as wire`` inside a running loop."""

    def __init__(
        self, char_time: float = 0.0, *, frame_gap: float = 0.0, directory: str | None = None
    ) -> None:
        self.char_time = char_time  # seconds per byte on the simulated line; 0 = no pacing
        self.frame_gap = frame_gap  # silence the line keeps after each chunk (RTU: 3.5 chars)
        self.to_server: Filter | None = None  # applied to request chunks
        self.to_client: Filter | None = None  # applied to response chunks
        # a two-wire RS-485 adapter that hears itself: each request chunk, passed through this
        # (return it unchanged, altered, or None for no echo), comes back to the client as it
        # is clocked out, before any reply
        self.echo: Filter | None = None
        self.bytes_to_server = 0
        self.bytes_to_client = 0
        self._dir = directory or tempfile.mkdtemp(prefix="ptywire-")
        self.client_path = os.path.join(self._dir, "ttyCLIENT")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._a: _Pty | None = None
        self._b: _Pty | None = None
        self._busy_until = 0.0

    @property
    def server_path(self) -> str:
        assert self._b is not None, "wire not started"
        return self._b.path

    async def __aenter__(self) -> PtyWire:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._b = _Pty()
        self._loop.add_reader(self._b.master, self._pump, "b")
        self.plug()

    def plug(self) -> None:
        """Attach a (new) client-side adapter under ``client_path``."""
        assert self._loop is not None
        self._a = _Pty()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.client_path)
        os.symlink(self._a.path, self.client_path)
        self._loop.add_reader(self._a.master, self._pump, "a")

    def unplug(self) -> None:
        """Make the client-side adapter vanish, like a USB-serial dongle pulled out."""
        if self._a is None or self._loop is None:
            return
        self._loop.remove_reader(self._a.master)
        self._a.close()
        self._a = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.client_path)

    def inject_to_client(self, data: bytes) -> None:
        """Put raw bytes (noise, a truncated frame) on the line towards the client."""
        if self._a is not None:
            self._deliver(self._a.master, data)

    def close(self) -> None:
        self.unplug()
        if self._b is not None and self._loop is not None:
            self._loop.remove_reader(self._b.master)
            self._b.close()
            self._b = None
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)

    def _pump(self, side: str) -> None:
        src, dst = (self._a, self._b) if side == "a" else (self._b, self._a)
        if src is None:
            return
        try:
            data = os.read(src.master, 4096)
        except BlockingIOError:
            return
        except OSError:  # EIO: nobody has the slave open any more
            data = b""
        if not data or dst is None:
            return
        flt = self.to_server if side == "a" else self.to_client
        if flt is not None and (data := flt(data) or b"") == b"":
            return
        if side == "a":
            self.bytes_to_server += len(data)
            if self.echo is not None and (echo := self.echo(data)):
                self._echo(echo, len(data))
        else:
            self.bytes_to_client += len(data)
        self._deliver(dst.master, data)

    def _echo(self, echo: bytes, chars: int) -> None:
        assert self._loop is not None and self._a is not None
        if self.char_time <= 0:
            self._write(self._a.master, echo)
            return
        # heard back as the request goes out: in by the time the request has left
        arrive = max(self._loop.time(), self._busy_until) + chars * self.char_time
        self._loop.call_at(arrive, self._write, self._a.master, echo)

    def _deliver(self, fd: int, data: bytes) -> None:
        assert self._loop is not None
        if self.char_time <= 0:
            self._write(fd, data)
            return
        # half duplex: a chunk starts when the line is free and arrives once fully clocked out
        now = self._loop.time()
        arrive = max(now, self._busy_until) + len(data) * self.char_time
        self._busy_until = arrive + self.frame_gap
        self._loop.call_at(arrive, self._write, fd, data)

    def _write(self, fd: int, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the far side vanished meanwhile (unplugged)
            os.write(fd, data)
