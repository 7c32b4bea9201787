"""Simulated serial field devices: ASCII streetlight controllers, Pelco-D camera heads, M-Bus
water meters, several per line, served on pty pairs (or TCP, as a serial server would).

The simulators frame and parse with their own small code, not the driver's, so a bug shared
by both cannot hide. Faults are injected per device (``SimDevice.faults``): silence, a wrong
checksum, noise before the reply, a reply cut off mid-frame.

    sims = await serve_serial_sims({"serial": [1, 2, 3], "pelco_d": [1, 2], "mbus": [1, 2]})
    sims.paths["mbus"]  # -> "/tmp/cityedge-sim-xxxx/mbus": use serial:///tmp/.../mbus
    ...
    await sims.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import tty
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drivers.sim.serial_devices import Faults, MBusLine, PelcoLine, Responder, StreetlightLine

__all__ = ["Faults", "PtyLine", "SerialSims", "serve_serial_sims"]

RESPONDERS: dict[str, type[Responder]] = {
    "serial": StreetlightLine,
    "pelco_d": PelcoLine,
    "mbus": MBusLine,
}


class PtyLine:
    """A pty pair: the simulator holds the master; ``path`` (a symlink to the slave) is what a
    gateway config names. ``unplug()``/``replug()`` emulate pulling a USB adapter."""

    def __init__(self, responder: Responder, link: Path, delay: float = 0.002) -> None:
        self.responder = responder
        self.link = link
        self.delay = delay
        self.master = -1
        self.slave = -1
        self.received = bytearray()  # everything the gateway sent (for tests)
        # a two-wire RS-485 adapter that hears itself: what the gateway sends, passed through
        # this (unchanged, altered, or None for no echo), comes straight back to it
        self.echo: Callable[[bytes], bytes | None] | None = None

    @property
    def path(self) -> str:
        return str(self.link)

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        for fd in (self.master, self.slave):
            tty.setraw(fd)  # no echo, no CR/LF translation: bytes pass untouched
        os.set_blocking(self.master, False)
        tmp = self.link.with_suffix(".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link)
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def unplug(self) -> None:
        if self.master >= 0:
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
            os.close(self.slave)
            self.master = self.slave = -1

    def replug(self) -> None:
        self.unplug()
        self.plug()

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while nobody has the slave open
        self.received += data
        if self.echo is not None and (echo := self.echo(data)):
            self._write(self.master, echo)
        for reply in self.responder.feed(data):
            if reply:
                asyncio.get_running_loop().call_later(self.delay, self._write, self.master, reply)

    def _write(self, fd: int, data: bytes) -> None:
        if fd == self.master and fd >= 0:
            with contextlib.suppress(OSError):
                os.write(fd, data)


@dataclass
class SerialSims:
    paths: dict[str, str] = field(default_factory=dict)
    lines: dict[str, PtyLine] = field(default_factory=dict)
    tcp: dict[str, asyncio.Server] = field(default_factory=dict)
    tmpdir: tempfile.TemporaryDirectory[str] | None = None

    def responder(self, protocol: str) -> Responder:
        return self.lines[protocol].responder

    async def serve_tcp(self, protocol: str, host: str = "127.0.0.1", port: int = 0) -> int:
        """Also serve ``protocol``'s devices over TCP (for serial+tcp://); returns the port."""
        responder = self.lines[protocol].responder

        async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(4096):
                    for reply in responder.feed(data):
                        writer.write(reply)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(conn, host, port)
        self.tcp[protocol] = server
        bound: int = server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        for line in self.lines.values():
            line.unplug()
        for server in self.tcp.values():
            server.close()
            await server.wait_closed()
        if self.tmpdir is not None:
            self.tmpdir.cleanup()

    async def __aenter__(self) -> SerialSims:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_serial_sims(
    spec: Mapping[str, Sequence[int]], *, link_dir: str | None = None, delay: float = 0.002
) -> SerialSims:
    """Start one pty line per protocol in ``spec`` ("serial" = ASCII streetlights, "pelco_d",
    "mbus") with devices at the given addresses. Returns at once: the lines are served by
    event-loop reader callbacks until ``close()``. ``paths[protocol]`` is a symlink to the
    device-side tty (in ``link_dir``, default a fresh temp dir), stable across ``replug()``."""
    sims = SerialSims()
    if link_dir is None:
        sims.tmpdir = tempfile.TemporaryDirectory(prefix="cityedge-sim-")
        link_dir = sims.tmpdir.name
    base = Path(link_dir)
    os.makedirs(base, exist_ok=True)
    for protocol, addrs in spec.items():
        if protocol not in RESPONDERS:
            raise ValueError(
                f"no serial simulator for protocol {protocol!r} (have {', '.join(RESPONDERS)})"
            )
        line = PtyLine(RESPONDERS[protocol](addrs, clock=time.time), base / protocol, delay)
        line.plug()
        sims.lines[protocol] = line
        sims.paths[protocol] = line.path
    return sims
