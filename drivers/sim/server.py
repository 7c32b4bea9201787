"""Modbus TCP server hosting simulated streetlights, water meters and traffic cameras.

One pymodbus ``ModbusTcpServer`` on loopback serves any number of unit ids of each kind, like a
serial-to-Ethernet gateway in front of an RS-485 line. It uses pymodbus' ``SimDevice`` datastore
(the non-deprecated API) with one *action* per unit: before every request the action refreshes
the unit's registers from its physics model, and a write is decoded with the profile, checked
against the point's bounds and handed to the model (exception 3 if refused). The shipped
profile of each kind is the register map, so the simulator and the profile always agree.
Registers a profile marks undefined answer exception 2, as the real controller does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from drivers.core.fpenv import keep_subnormals
from drivers.core.library import ProfileLibrary
from drivers.core.profile import DataType, Point, Profile, Table
from drivers.sim import regs
from drivers.sim.models import MODEL_CLASSES, SimModel, WriteRejected

# pymodbus.server has just loaded aiohttp and so yarl, whose armv7l wheel turns on flush-to-zero
# for the whole process (drivers/core/fpenv.py): `cityedge demo` runs the agent in this one
keep_subnormals()
PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
TICK_S = 0.2
_FC_TABLE = {
    1: Table.COIL,
    5: Table.COIL,
    15: Table.COIL,
    2: Table.DISCRETE,
    4: Table.INPUT,
    3: Table.HOLDING,
    6: Table.HOLDING,
    16: Table.HOLDING,
    22: Table.HOLDING,
    23: Table.HOLDING,
}
_TABLE_ORDER = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT)  # SimDevice tuple order


@dataclass
class SimSpec:
    streetlights: Sequence[int] = (1, 2, 3)
    water_meters: Sequence[int] = (11, 12)
    cameras: Sequence[int] = (21,)
    energy_meters: Sequence[int] = ()  # eastron/sdm630
    speed: float = 1.0  # simulated seconds per real second (3600: a day in 24 s)
    # kind -> profile ref used as register map (e.g. {"streetlight": "cityedge/streetlight_fw3"})
    profiles: Mapping[str, str] = field(default_factory=dict)

    def units(self) -> dict[str, list[int]]:
        return {
            "streetlight": list(self.streetlights),
            "water_meter": list(self.water_meters),
            "camera": list(self.cameras),
            "energy_meter": list(self.energy_meters),
        }


@dataclass
class _Unit:
    model: SimModel
    profile: Profile
    image: dict[Table, list[int]]  # register words; bit tables hold 0/1 per bit


def _table_size(profile: Profile, table: Table) -> int:
    ends = [p.address + p.registers for p in profile.points if p.table is table]
    ends += [u.end + 1 for u in profile.limits.undefined if u.table is table]
    size = max(ends, default=0)
    return max(16, -(-size // 16) * 16) if table.is_bits else size


def _blocks(profile: Profile, table: Table, size: int) -> list[SimData]:
    """SimData runs over 0..size-1: undefined ranges invalid, non-writable holding read-only."""
    if table.is_bits:
        return [SimData(0, values=[False] * size, datatype=SimType.BITS)]
    if size == 0:
        return [SimData(0, datatype=SimType.INVALID)]
    kind: list[tuple[bool, bool]] = [(True, False)] * size  # (valid, writable)
    for p in profile.points:
        if p.table is table and p.writable:
            for a in range(p.address, p.address + p.registers):
                kind[a] = (True, True)
    for u in profile.limits.undefined:
        if u.table is table:
            for a in range(u.start, u.end + 1):
                kind[a] = (False, False)
    out: list[SimData] = []
    start = 0
    for a in range(1, size + 1):
        if a == size or kind[a] != kind[start]:
            valid, writable = kind[start]
            n = a - start
            out.append(
                SimData(start, count=n, values=0, datatype=SimType.REGISTERS, readonly=not writable)
                if valid
                else SimData(start, count=n, datatype=SimType.INVALID)
            )
            start = a
    return out


class SimulatorServer:
    def __init__(
        self,
        spec: SimSpec,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.spec = spec
        self.host = host
        self.port = port
        self._clock = clock or time.time
        self._t0 = self._clock()
        self._server: ModbusTcpServer | None = None
        self._ticks: asyncio.Task[None] | None = None  # ``run`` while in ``async with``
        self._units: dict[int, _Unit] = {}
        lib = ProfileLibrary([PROFILE_DIR])
        for kind, ids in spec.units().items():
            cls = MODEL_CLASSES[kind]
            profile = lib.load(spec.profiles.get(kind, cls.profile_ref))
            for uid in ids:
                if not 1 <= uid <= 247 or uid in self._units:
                    raise ValueError(f"unit id {uid} is out of 1..247 or used twice")
                model = cls(uid, clock=self.sim_time)
                ident = profile.identify
                if ident is not None:  # the unit states the identification of its profile
                    answer = ident.example(model.values()[ident.point])
                    if isinstance(answer, float | int | str):
                        model.overrides[ident.point] = answer
                image = {t: [0] * _table_size(profile, t) for t in Table}
                self._units[uid] = _Unit(model, profile, image)
                self._refresh(self._units[uid])

    # --- time ---
    def sim_time(self) -> float:
        """Simulated UTC epoch seconds: starts at the real time, runs ``speed`` times faster."""
        return self._t0 + (self._clock() - self._t0) * self.spec.speed

    # --- inspection (tests, demo) ---
    def device(self, unit_id: int) -> SimModel:
        return self._units[unit_id].model

    def profile(self, unit_id: int) -> Profile:
        return self._units[unit_id].profile

    def unit_ids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for uid, u in sorted(self._units.items()):
            out.setdefault(u.model.kind, []).append(uid)
        return out

    def registers(self, unit_id: int, table: str, address: int, count: int) -> list[int]:
        u = self._units[unit_id]
        self._refresh(u)
        return list(u.image[Table(table)][address : address + count])

    # --- lifecycle ---
    async def start(self) -> None:
        if self._server is not None:
            return
        devices = [
            SimDevice(
                uid,
                simdata=tuple(  # type: ignore[arg-type]
                    _blocks(u.profile, t, len(u.image[t])) for t in _TABLE_ORDER
                ),
                action=partial(self._action, uid),
            )
            for uid, u in self._units.items()
        ]
        # Unit id 0 is pymodbus' catch-all: any other unit id gets exception 0x0B ("gateway
        # target device failed to respond"), what a serial gateway says for a silent unit.
        devices.append(
            SimDevice(
                0,
                simdata=[SimData(0, count=65536, datatype=SimType.REGISTERS)],
                action=_no_such_unit,
            )
        )
        server = ModbusTcpServer(devices, address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus' way of saying the bind failed
            await server.shutdown()  # type: ignore[no-untyped-call]
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        self._server = server
        # port 0: the listener (an asyncio.Server) knows the port the OS picked
        with contextlib.suppress(AttributeError, IndexError, TypeError):
            listener: Any = self._server.transport
            self.port = int(listener.sockets[0].getsockname()[1])
        if not self.port:
            await self.stop()
            raise RuntimeError("cannot tell which port the simulator listens on")

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def run(self) -> None:
        """Start (if needed) and advance the physics every TICK_S until cancelled."""
        await self.start()
        try:
            while True:
                self.tick()
                await asyncio.sleep(TICK_S)
        finally:
            await self.stop()

    async def __aenter__(self) -> SimulatorServer:
        """Listening, its physics advancing (``run``), until the block ends."""
        await self.start()
        self._ticks = asyncio.create_task(self.run(), name=f"sim:{self.port}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ticks is not None:
            ticks, self._ticks = self._ticks, None
            ticks.cancel()
            await asyncio.gather(ticks, return_exceptions=True)
        await self.stop()

    def tick(self) -> None:
        for u in self._units.values():
            self._refresh(u)

    # --- register image ---
    def _refresh(self, u: _Unit) -> None:
        values = u.model.values()
        for p in u.profile.points:
            img = u.image[p.table]
            v = values[p.name]
            if p.table.is_bits:
                img[p.address] = int(bool(v))
            elif p.type is DataType.BIT:
                img[p.address] = regs.merge_bit(img[p.address], p.bit or 0, bool(v))
            else:
                words = regs.encode(p, v, p.order or u.profile.word_order)
                img[p.address : p.address + len(words)] = words

    async def _action(
        self,
        unit_id: int,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        u = self._units[unit_id]
        table = _FC_TABLE.get(fc)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            if table is not Table.HOLDING:
                return ExcCodes.ILLEGAL_ADDRESS
            return self._write(u, address, [int(v) for v in set_values])
        self._refresh(u)
        img = u.image[table]
        if table.is_bits:
            packed = SimUtils.bitsToRegisters([bool(b) for b in img])
            registers[0 : len(packed)] = packed  # every block starts at address 0
        else:
            registers[0 : len(img)] = img
        return None

    def _write(self, u: _Unit, address: int, values: list[int]) -> ExcCodes | None:
        end = address + len(values)
        img = list(u.image[Table.HOLDING])
        img[address:end] = values
        todo: list[tuple[Point, float]] = []
        for p in u.profile.points:
            lo, hi = p.address, p.address + p.registers
            if p.table is not Table.HOLDING or not p.writable or hi <= address or lo >= end:
                continue
            if lo < address or hi > end:
                return ExcCodes.ILLEGAL_ADDRESS  # a multi-register value must be written whole
            value = regs.decode(p, img[lo:hi], p.order or u.profile.word_order)
            if not isinstance(value, int | float):
                return ExcCodes.ILLEGAL_VALUE
            if (
                (p.min is not None and value < p.min - 1e-9)
                or (p.max is not None and value > p.max + 1e-9)
                or (p.enum is not None and int(value) not in p.enum)
            ):
                return ExcCodes.ILLEGAL_VALUE
            todo.append((p, float(value)))
        try:
            for p, value in todo:
                u.model.write(p.name, value)
        except WriteRejected:
            return ExcCodes.ILLEGAL_VALUE
        return None


async def _no_such_unit(
    fc: int,
    start: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    return ExcCodes.GATEWAY_NO_RESPONSE
