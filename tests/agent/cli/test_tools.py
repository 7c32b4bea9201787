"""Technician CLI end to end: scan (TCP and serial at several line settings), and
status / read / write through a running agent and without one."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.cli.scan import Progress, scan
from agent.config import load_config
from agent.runtime import Agent
from drivers.core.profile import Table
from drivers.sim.server import SimSpec, SimulatorServer
from tests.agent.test_runtime import SlowSink
from tests.conftest import free_port
from tests.drivers.modbus.conftest import modbus_rtu_server, sim_device

__all__ = ["modbus_rtu_server"]

CONFIG = """\
[gateway]
id = "gw-cli"
state_dir = "state"
watch_config = 0

[[buses]]
id = "sim"
endpoint = "tcp://127.0.0.1:{port}"
timeout = 1.0

[[devices]]
id = "lamp-1"
bus = "sim"
profile = "cityedge/streetlight"
unit_id = 1
interval = 0.5

[[outputs]]
type = "jsonl"
id = "out"
path = "readings.jsonl"
"""


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimSpec()) as server:
        yield server


async def cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    # a hang guard: one CLI run took over 30 s under qemu-user on a loaded machine
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_scan_tcp_finds_every_simulated_unit(sim: SimulatorServer) -> None:
    found = await scan(
        [f"tcp://127.0.0.1:{sim.port}"],
        list(range(1, 25)),
        Table.HOLDING,
        0,
        0.3,
        False,
        Progress(24, False),
    )
    assert sorted(f.unit for f in found) == [1, 2, 3, 11, 12, 21]


async def test_scan_serial_finds_units_and_line_settings(modbus_rtu_server) -> None:
    rtu = await modbus_rtu_server([sim_device(3, holding={0: 1}), sim_device(7, holding={5: 2})])
    wire = rtu.wire
    slave = os.open(wire.client_path, os.O_RDWR | os.O_NOCTTY)  # same tty the client opens

    def only_19200(chunk: bytes) -> bytes | None:
        # a device at 19200 baud hears garbage (here: nothing) at any other rate. (Parity is
        # not varied: Linux ptys refuse some of pyserial's parity termios flags with EINVAL.)
        # Absent unit ids stay silent as on a real RS-485 line (pymodbus' SimDevice would
        # answer them with exception 4), so requests to them are dropped too.
        if termios.tcgetattr(slave)[4] != termios.B19200 or chunk[:1] not in (b"\x03", b"\x07"):
            return None
        return chunk

    wire.to_server = only_19200
    base = wire.client_path
    urls = [f"rtu://{base}?baudrate={b}&parity=N" for b in (9600, 19200, 38400)]
    try:
        found = await scan(
            urls, list(range(1, 9)), Table.HOLDING, 0, 0.1, True, Progress(24, False)
        )
    finally:
        os.close(slave)
    hit = f"rtu://{base}?baudrate=19200&parity=N"
    assert {(f.unit, f.endpoint) for f in found} == {(3, hit), (7, hit)}
    assert {f.answer for f in found if f.unit == 7} == {"exception 2"}


async def test_cli_through_running_agent(sim: SimulatorServer, tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(port=sim.port))
    agent = Agent(load_config(cfg), sinks=[SlowSink(0)])
    task = asyncio.create_task(agent.run())
    try:
        while agent.pipeline.received < 20:
            await asyncio.sleep(0.05)
        rc, out, err = await cli("status", "-c", str(cfg), "--json", cwd=tmp_path)
        assert rc == 0, err
        status = json.loads(out)
        assert status["devices"]["lamp-1"]["online"] is True
        assert status["devices"]["lamp-1"]["state"] == "online"
        assert status["devices"]["lamp-1"]["excluded"] == []

        rc, out, err = await cli(
            "read", "-c", str(cfg), "lamp-1", "voltage", "dim_level", cwd=tmp_path
        )
        assert rc == 0, err
        assert "voltage" in out and "good" in out

        rc, out, err = await cli(
            "write", "-c", str(cfg), "lamp-1", "dim_level", "0.4", cwd=tmp_path
        )
        assert rc == 0, err + out
        assert sim.registers(1, "holding", 0, 1) == [40]

        rc, out, err = await cli("write", "-c", str(cfg), "lamp-1", "voltage", "1", cwd=tmp_path)
        assert rc == 2 and "read-only" in err
        audit = (tmp_path / "state" / "audit.jsonl").read_text().splitlines()
        assert [json.loads(x)["result"] for x in audit] == ["ok", "rejected"]
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)


async def test_cli_one_shot_without_daemon(sim: SimulatorServer, tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(port=sim.port))
    rc, out, err = await cli("read", "-c", str(cfg), "lamp-1", "--json", cwd=tmp_path)
    assert rc == 0, err
    rows = json.loads(out)
    assert {r["point"] for r in rows} >= {"voltage", "dim_level", "energy"}
    rc, out, err = await cli("write", "-c", str(cfg), "lamp-1", "dim_level", "0.25", cwd=tmp_path)
    assert rc == 0, err
    assert sim.registers(1, "holding", 0, 1) == [25]
    rc, _, err = await cli("write", "-c", str(cfg), "lamp-1", "dim_level", "7", cwd=tmp_path)
    assert rc == 2 and "maximum" in err
    rc, _, err = await cli("status", "-c", str(cfg), cwd=tmp_path)
    assert rc == 3 and "no running agent" in err
    rc, _, err = await cli("read", "-c", str(cfg), "lamp-9", cwd=tmp_path)
    assert rc != 0 and "unknown device 'lamp-9'" in err
    # nothing listens: the device state says why at once, instead of a timeout
    cfg.write_text(CONFIG.format(port=free_port()))
    rc, _, err = await cli("read", "-c", str(cfg), "lamp-1", cwd=tmp_path)
    assert rc == 1 and "'lamp-1' is offline: refused" in err, err
