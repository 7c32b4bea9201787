"""Real Modbus peers for driver tests: pymodbus servers on loopback TCP and on pty pairs.

Fixtures (factories, so a test can start several or restart one):
    modbus_tcp_server(devices, framer=FramerType.SOCKET, port=0) -> TcpServer
    modbus_rtu_server(devices, char_time=0.0, framer=FramerType.RTU) -> RtuServer
Helpers: ``sim_device`` builds a SimDevice from plain register maps; ``make_binding`` /
``make_bus_config`` build configs; ``Collector`` records emitted batches; ``running`` runs a
bus owner inside a TaskGroup for the duration of a ``async with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.base import DeviceBinding
from drivers.core.config import BusConfig, DeviceConfig
from drivers.core.profile import Limits, Point, Profile
from drivers.core.reading import Reading
from drivers.device_state import Transition
from drivers.modbus.bus import ModbusBus
from tests.fixtures.ptywire import PtyWire

# --------------------------------------------------------------------------- simulated devices


def _block(regs: Mapping[int, int]) -> list[SimData]:
    """Contiguous runs of registers -> SimData; addresses not listed answer exception 2."""
    out: list[SimData] = []
    run: list[int] = []
    start = prev = -2
    for addr in sorted(regs):
        if addr != prev + 1 and run:
            out.append(SimData(start, values=run, datatype=DataType.REGISTERS))
            run = []
        if not run:
            start = addr
        run.append(regs[addr] & 0xFFFF)
        prev = addr
    if run:
        out.append(SimData(start, values=run, datatype=DataType.REGISTERS))
    return out or [SimData(60000, values=[0], datatype=DataType.REGISTERS)]


def _bits(bits: Mapping[int, bool]) -> list[SimData]:
    if not bits:
        return [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
    top = (max(bits) // 16 + 1) * 16
    return [
        SimData(0, values=[bool(bits.get(i, False)) for i in range(top)], datatype=DataType.BITS)
    ]


Action = Callable[[int, int, int, int, list[int], Any], Awaitable[ExcCodes | None]]


def sim_device(
    unit: int,
    *,
    holding: Mapping[int, int] | None = None,
    inputs: Mapping[int, int] | None = None,
    coils: Mapping[int, bool] | None = None,
    discrete: Mapping[int, bool] | None = None,
    action: Action | None = None,
) -> SimDevice:
    """A unit with separate tables. Unlisted registers are invalid (the device answers
    exception 2 for any read that touches them)."""
    return SimDevice(
        unit,
        simdata=(
            _bits(coils or {}),
            _bits(discrete or {}),
            _block(holding or {}),
            _block(inputs or {}),
        ),
        action=action,  # type: ignore[arg-type]  # pymodbus types it as a coroutine function
    )


async def _cancel_hung_handlers() -> None:
    """Server handler tasks stuck in ``silent_action`` outlive the server: end them."""
    hung = [
        t
        for t in asyncio.all_tasks()
        if "handle_request" in getattr(t.get_coro(), "__qualname__", "")
    ]
    for t in hung:
        t.cancel()
    await asyncio.gather(*hung, return_exceptions=True)


def silent_action() -> Action:
    """Device action that never returns: the server never answers this unit (a dead unit)."""

    async def hang(*_: Any) -> ExcCodes | None:
        await asyncio.sleep(3600)  # a timer keeps the task referenced (an Event would be GC'd)
        return None

    return hang


def regs_of(table: Mapping[int, int], start: int, values: Sequence[int]) -> dict[int, int]:
    out = dict(table)
    out.update({start + i: v for i, v in enumerate(values)})
    return out


# --------------------------------------------------------------------------- servers


@dataclass
class TcpServer:
    devices: list[SimDevice]
    framer: FramerType
    host: str = "127.0.0.1"
    port: int = 0
    server: ModbusTcpServer | None = None

    @property
    def url(self) -> str:
        scheme = "tcp" if self.framer is FramerType.SOCKET else "rtu+tcp"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        self.server = ModbusTcpServer(
            self.devices, framer=self.framer, address=(self.host, self.port)
        )
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Close the listener and every client connection (the peer sees a dropped link)."""
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


@dataclass
class RtuServer:
    wire: PtyWire
    server: ModbusSerialServer
    framer: FramerType = FramerType.RTU

    def url(self, baudrate: int = 19200, parity: str = "N") -> str:
        scheme = "rtu" if self.framer is FramerType.RTU else "ascii"
        extra = "&bytesize=8" if scheme == "ascii" else ""
        return f"{scheme}://{self.wire.client_path}?baudrate={baudrate}&parity={parity}{extra}"


@pytest.fixture
async def modbus_tcp_server() -> AsyncIterator[Callable[..., Awaitable[TcpServer]]]:
    started: list[TcpServer] = []

    async def start(
        devices: list[SimDevice], *, framer: FramerType = FramerType.SOCKET, port: int = 0
    ) -> TcpServer:
        srv = TcpServer(devices, framer, port=port)
        await srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.stop()
    await _cancel_hung_handlers()


@pytest.fixture
async def modbus_rtu_server() -> AsyncIterator[Callable[..., Awaitable[RtuServer]]]:
    started: list[RtuServer] = []

    async def start(
        devices: list[SimDevice], *, char_time: float = 0.0, framer: FramerType = FramerType.RTU
    ) -> RtuServer:
        wire = PtyWire(char_time)
        wire.start()
        server = ModbusSerialServer(
            devices, framer=framer, port=wire.server_path, baudrate=19200, timeout=0.05
        )
        await server.serve_forever(background=True)
        rtu = RtuServer(wire, server, framer)
        started.append(rtu)
        return rtu

    yield start
    for rtu in started:
        await rtu.server.shutdown()
        rtu.wire.close()
    await _cancel_hung_handlers()


# --------------------------------------------------------------------------- configs, runs


def make_profile(
    points: Sequence[Point], *, kind: str = "test", limits: Limits | None = None, **kw: Any
) -> Profile:
    return Profile(id=f"p-{kind}", kind=kind, points=tuple(points), limits=limits or Limits(), **kw)


def make_binding(
    dev_id: str, unit: int, profile: Profile, *, interval: float = 0.1, bus: str = "b1"
) -> DeviceBinding:
    cfg = DeviceConfig(
        id=dev_id,
        bus=bus,
        profile=profile.id,
        unit_id=unit,
        interval=interval,
        entity_id=f"urn:ngsi-ld:Device:{dev_id}",
    )
    return DeviceBinding("gw1", cfg, profile)


def make_bus_config(url: str, **kw: Any) -> BusConfig:
    kw.setdefault("timeout", 0.1)
    kw.setdefault("retries", 0)
    return BusConfig(id="b1", endpoint=url, **kw)


@dataclass
class Collector:
    """The ``emit`` callable: records each batch with the monotonic time it arrived."""

    batches: list[tuple[float, str, list[Reading]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, binding: DeviceBinding, readings: Sequence[Reading]) -> None:
        self.batches.append((time.monotonic(), binding.id, list(readings)))
        self.changed.set()

    def of(self, dev_id: str) -> list[list[Reading]]:
        return [b for _, d, b in self.batches if d == dev_id]

    def last(self, dev_id: str) -> dict[str, Reading]:
        batches = self.of(dev_id)
        return {r.point: r for r in batches[-1]} if batches else {}

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class States:
    """The ``on_state`` listener: records each device transition with the time it came."""

    log: list[tuple[float, Transition]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, t: Transition) -> None:
        self.log.append((time.monotonic(), t))
        self.changed.set()

    def of(self, dev_id: str) -> list[tuple[str, str | None]]:
        """(state, reason) of each transition of ``dev_id``, oldest first."""
        return [
            (t.state.value, None if t.reason is None else t.reason.value)
            for _, t in self.log
            if t.device_id == dev_id
        ]

    def state(self, dev_id: str) -> str | None:
        got = self.of(dev_id)
        return got[-1][0] if got else None

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def running(bus: ModbusBus) -> AsyncIterator[ModbusBus]:
    """Run the bus owner in a TaskGroup; cancel it on exit (as the runtime does)."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(bus.run(), name=f"bus-{bus.bus_id}")
        try:
            async with asyncio.timeout(5):
                await bus.ready()
            yield bus
        finally:
            task.cancel()
