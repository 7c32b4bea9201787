"""The simulator as a real Modbus TCP peer: a plain pymodbus client on loopback."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator
from typing import cast

import pytest
from pymodbus.client import AsyncModbusTcpClient

from agent.cli.simulate import allocate
from drivers.core.profile import Table
from drivers.sim import regs
from drivers.sim.models import CameraModel, StreetlightModel, WaterMeterModel
from drivers.sim.server import SimSpec, SimulatorServer
from tests.drivers.sim.test_models import FakeClock, at_local

Env = tuple[SimulatorServer, AsyncModbusTcpClient, FakeClock]


@pytest.fixture
async def night() -> AsyncIterator[Env]:
    clock = FakeClock(at_local(21))  # lamps on, evening water peak, moderate traffic
    sim = SimulatorServer(SimSpec(), clock=clock)
    await sim.start()
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
    assert await client.connect()
    try:
        yield sim, client, clock
    finally:
        client.close()
        await sim.stop()


async def read(
    client: AsyncModbusTcpClient, table: str, unit: int, addr: int, count: int
) -> list[int]:
    fn = client.read_input_registers if table == "input" else client.read_holding_registers
    rr = await fn(addr, count=count, device_id=unit)
    assert not rr.isError(), rr
    return list(rr.registers)


async def test_serves_every_unit_of_every_kind(night: Env) -> None:
    sim, client, _ = night
    assert sim.port > 0
    assert sim.unit_ids() == {"streetlight": [1, 2, 3], "water_meter": [11, 12], "camera": [21]}
    for unit in (1, 2, 3):
        assert isinstance(sim.device(unit), StreetlightModel)
        words = await read(client, "input", unit, 0, 12)
        assert words[0] == 1  # powerState "on" at night
        assert 1440 < words[5] < 1560  # active power 0.1 W: ~150 W
        assert words == sim.registers(unit, "input", 0, 12)
    for unit in (11, 12):
        assert isinstance(sim.device(unit), WaterMeterModel)
        words = await read(client, "holding", unit, 0, 18)
        litres = words[0] | words[1] << 16  # CDAB: low word first
        assert litres == round(cast(float, sim.device(unit).values()["volume"]))
        serial = struct.pack(">8H", *words[10:18]).rstrip(b"\0").decode()
        assert serial == f"UWM-2026-{unit:06d}"
    assert isinstance(sim.device(21), CameraModel)
    words = await read(client, "input", 21, 0, 10)
    assert words[4] << 16 | words[5] == sim.device(21).values()["vehicle_count"]
    rr = await client.read_discrete_inputs(0, count=1, device_id=2)
    assert rr.bits[0] is True  # relay closed


async def test_every_point_matches_the_model(night: Env) -> None:
    sim, client, _ = night
    for unit in (1, 11, 21):
        prof = sim.profile(unit)
        values = sim.device(unit).values()
        for p in prof.points:
            if p.table.is_bits:
                continue
            words = await read(client, p.table.value, unit, p.address, p.registers)
            if p.bit is not None:
                assert bool(words[0] >> p.bit & 1) == values[p.name], p.name
                continue
            got = regs.decode(p, words, p.order or prof.word_order)
            want = values[p.name]
            if isinstance(want, float):
                assert got == pytest.approx(want, abs=p.scale * 0.51, rel=1e-6), p.name
            else:
                assert got == want, p.name


async def test_write_takes_effect(night: Env) -> None:
    _, client, _ = night
    wr = await client.write_register(0, 40, device_id=2)  # dim lamp 2 to 40 %
    assert not wr.isError()
    assert (await read(client, "holding", 2, 0, 1)) == [40]
    power = (await read(client, "input", 2, 5, 1))[0] / 10
    assert power == pytest.approx(60, rel=0.04)
    assert (await read(client, "input", 2, 0, 1)) == [2]  # powerState "low"
    assert (await read(client, "input", 1, 5, 1))[0] > 1400  # the neighbour is untouched
    # manual mode + switch off via one FC16 write
    wr = await client.write_registers(1, [0, 1], device_id=3)
    assert not wr.isError()
    assert (await read(client, "input", 3, 5, 1)) == [0]


async def test_write_errors_are_modbus_exceptions(night: Env) -> None:
    _, client, _ = night
    bad = await client.write_register(0, 140, device_id=1)  # 140 % > max
    assert bad.isError() and bad.exception_code == 3
    ro = await client.write_register(3, 100, device_id=1)  # rated power is read-only
    assert ro.isError() and ro.exception_code == 2
    cam = await client.write_register(0, 9, device_id=21)  # no preset 9
    assert cam.isError() and cam.exception_code == 3
    gone = await client.read_holding_registers(0, count=1, device_id=99)
    assert gone.isError() and gone.exception_code == 0x0B
    undefined = await client.read_input_registers(10, count=4, device_id=1)  # spans 12..15
    assert undefined.isError() and undefined.exception_code == 2


async def test_counters_advance_with_the_clock(night: Env) -> None:
    _, client, clock = night
    e0 = await read(client, "input", 1, 8, 2)
    c0 = await read(client, "input", 21, 4, 2)
    clock.advance(3600)
    e1 = await read(client, "input", 1, 8, 2)
    c1 = await read(client, "input", 21, 4, 2)
    wh0, wh1 = e0[0] | e0[1] << 16, e1[0] | e1[1] << 16
    assert wh1 - wh0 == pytest.approx(150, abs=6)
    assert (c1[0] << 16 | c1[1]) - (c0[0] << 16 | c0[1]) > 100


async def test_camera_preset_over_modbus(night: Env) -> None:
    _, client, clock = night
    assert not (await client.write_register(0, 4, device_id=21)).isError()  # pan 270 tilt -5
    assert (await read(client, "holding", 21, 0, 4))[:2] == [4, 27000]
    assert (await read(client, "input", 21, 3, 1)) == [1]  # moving
    clock.advance(10)
    pan, tilt, zoom, status = await read(client, "input", 21, 0, 4)
    assert (pan, tilt - 65536, zoom, status) == (27000, -500, 100, 0)


async def test_speed_and_variant_profile() -> None:
    clock = FakeClock(at_local(12))
    spec = SimSpec(
        streetlights=(5,),
        water_meters=(),
        cameras=(),
        speed=3600.0,
        profiles={"streetlight": "cityedge/streetlight_fw3"},
    )
    sim = SimulatorServer(spec, clock=clock)
    assert sim.profile(5).id == "cityedge/streetlight_fw3"
    assert sim.registers(5, "input", 0, 1) == [0]  # noon: lamp off
    assert sim.registers(5, "input", 24, 1)[0] > 50_000  # photocell, lux
    clock.advance(8)  # 8 s real = 8 h simulated: 20:00
    assert sim.registers(5, "input", 0, 1) == [1]
    hi, lo = sim.registers(5, "input", 8, 2)  # ABCD on firmware 3
    assert hi << 16 | lo == round(cast(float, sim.device(5).values()["energy"]) * 1000)
    assert sim.profile(5).point("energy").order is not None
    assert Table.INPUT in {u.table for u in sim.profile(5).limits.undefined}


async def test_run_ticks_until_cancelled_and_stops() -> None:
    sim = SimulatorServer(SimSpec(streetlights=(1,), water_meters=(), cameras=()))
    task = asyncio.create_task(sim.run(), name="sim")
    for _ in range(50):
        await asyncio.sleep(0.02)
        if sim.port:
            break
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
    assert await client.connect()
    assert not (await client.read_input_registers(0, count=8, device_id=1)).isError()
    client.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    client = AsyncModbusTcpClient(
        "127.0.0.1", port=sim.port, timeout=0.5, retries=0, reconnect_delay=0
    )
    assert not await client.connect()  # nobody listens any more
    client.close()


async def test_async_with_serves_and_ticks_until_the_block_ends() -> None:
    async with SimulatorServer(SimSpec(streetlights=(1,), water_meters=(), cameras=())) as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
        assert await client.connect()
        assert not (await client.read_input_registers(0, count=8, device_id=1)).isError()
        client.close()
        ticks = sim._ticks
        assert ticks is not None and not ticks.done()
    assert ticks.cancelled() and sim._ticks is None
    client = AsyncModbusTcpClient(
        "127.0.0.1", port=sim.port, timeout=0.5, retries=0, reconnect_delay=0
    )
    assert not await client.connect()  # nobody listens any more
    client.close()


def test_unit_ids_must_be_unique() -> None:
    with pytest.raises(ValueError):
        SimulatorServer(SimSpec(streetlights=(1, 2), water_meters=(2,), cameras=()))


def test_allocate_unit_ids() -> None:
    assert allocate({"streetlight": 3, "water_meter": 2, "camera": 1}) == {
        "streetlight": [1, 2, 3],
        "water_meter": [11, 12],
        "camera": [21],
    }
    big = allocate({"streetlight": 12, "water_meter": 1, "camera": 0})
    assert big == {"streetlight": list(range(1, 13)), "water_meter": [13], "camera": []}
    with pytest.raises(ValueError):
        allocate({"streetlight": 240, "water_meter": 10, "camera": 0})


async def test_simulate_command_serves_until_sigterm() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "simulate", "--port", str(port), "--leak", "12",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or "serving until" not in lines[-1]:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, (await proc.stderr.read()).decode() if proc.stderr else ""
            lines.append(line.decode())
        text = "".join(lines)
        assert f"127.0.0.1:{port}" in text and "units 1-3" in text and "units 11-12" in text
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        assert await client.connect()
        alarms = await read(client, "holding", 12, 8, 1)
        assert alarms[0] & 1  # --leak 12 raised the leak bit
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
