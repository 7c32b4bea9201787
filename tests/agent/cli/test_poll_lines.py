"""Readable output of ``run --output human`` (and ``demo``), and simulators that stay quiet
unless asked: pymodbus' hex dumps of its last frames appear with ``--verbose`` only."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import struct
import sys
from pathlib import Path

from agent.cli.poll_lines import PollLines
from drivers.core.reading import Quality, Reading
from drivers.device_state import Reason, State, Transition
from drivers.sim.server import SimSpec, SimulatorServer
from tests.conftest import free_port

T0 = 1_795_000_000_000  # 2026-11-18T11:06:40Z


def reading(device: str, point: str, value: object, unit: str | None, **kw: object) -> Reading:
    return Reading("gw", device, "streetlight", point, point, value, unit, None, T0, **kw)  # type: ignore[arg-type]


async def test_one_line_per_device_poll_with_units_and_state_changes() -> None:
    buf = io.StringIO()
    sink = PollLines("stdout", buf)
    # the pipeline may hand two polls over in one batch: still one line per device
    await sink.submit(
        [
            reading("lamp-1", "dim_level", 0.4, "1"),
            reading("lamp-1", "voltage", 231.4, "V"),
            reading("lamp-1", "status_flags", ("daytime",), None),
            reading("meter-11", "temperature", 28.4, "Cel"),
            reading("meter-11", "flow_rate", None, "m3/h", quality=Quality.BAD,
                    reason="exception 2"),
        ]
    )  # fmt: skip
    sink.device_status(
        Transition("meter-11", "sim", State.OFFLINE, State.ONLINE, Reason.TIMEOUT,
                   "no answer after 2 tries", T0 + 5000)
    )  # fmt: skip
    sink.device_status(Transition("meter-11", "sim", State.ONLINE, State.OFFLINE, None, None, T0))
    lines = buf.getvalue().splitlines()
    assert lines[0] == (
        "11:06:40.000Z  lamp-1        dim_level 0.4  voltage 231.4 V  status_flags daytime"
    )
    assert lines[1] == (
        "11:06:40.000Z  meter-11      temperature 28.4 °C  flow_rate — m³/h (bad: exception 2)"
    )
    assert lines[2] == (
        "11:06:45.000Z  meter-11      ▼ offline  timeout: no answer after 2 tries  "
        "(was online, bus sim)"
    )
    assert lines[3] == "11:06:40.000Z  meter-11      ▲ online  (was offline, bus sim)"
    assert sink.written == 5


async def _output_until(proc: asyncio.subprocess.Process, path: Path, text: str) -> str:
    for _ in range(400):
        out = path.read_text(errors="replace")
        if text in out or proc.returncode is not None:
            return out
        await asyncio.sleep(0.05)
    return path.read_text(errors="replace")


async def test_run_output_human_follows_a_device_going_offline(tmp_path: Path) -> None:
    sim = SimulatorServer(SimSpec(streetlights=[1], water_meters=[], cameras=[]))
    await sim.start()
    sim_task = asyncio.create_task(sim.run())
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f"""[gateway]
id = "gw"
state_dir = "state"

[metrics]
port = 0  # any free port: a parallel run's agent may hold the default

[[buses]]
id = "sim"
endpoint = "tcp://127.0.0.1:{sim.port}"
timeout = 0.5

[[devices]]
id = "lamp-1"
bus = "sim"
profile = "cityedge/streetlight"
unit_id = 1
interval = 0.3

[[outputs]]
type = "jsonl"
id = "stdout"
"""
    )
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "run", str(cfg), "--output", "human",
            cwd=tmp_path, stdout=out, stderr=err,
        )  # fmt: skip
    try:
        text = await _output_until(proc, out_path, " V  ")
        assert proc.returncode is None, err_path.read_text()
        assert "lamp-1        ▲ online  (was unknown, bus sim)" in text, text
        poll = next(line for line in text.splitlines() if "voltage" in line)
        assert "dim_level 1.0" in poll and "energy " in poll and " kWh" in poll
        assert "{" not in text  # no JSON
        sim_task.cancel()
        await asyncio.gather(sim_task, return_exceptions=True)
        await sim.stop()  # the controller goes away
        text = await _output_until(proc, out_path, "▼ offline")
        assert "lamp-1        ▼ offline  " in text, text
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if not sim_task.done():
            sim_task.cancel()
            await sim.stop()


def _garbage_after_a_read(port: int) -> None:
    """A good read, then a frame with a wrong MBAP protocol id: pymodbus logs an error and
    appends hex dumps of its last frames."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, 2))
        assert s.recv(64)[7] == 3
        s.sendall(struct.pack(">HHHBBHH", 2, 7, 6, 1, 3, 0, 2))


async def _simulate(tmp_path: Path, *extra: str) -> str:
    port = free_port()
    log = tmp_path / f"sim{len(extra)}.log"
    with log.open("wb") as f:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "simulate", "--port", str(port), *extra,
            stdout=f, stderr=f, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        await _output_until(proc, log, "serving until")
        await asyncio.to_thread(_garbage_after_a_read, port)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return log.read_text()


async def test_simulate_is_quiet_unless_verbose(tmp_path: Path) -> None:
    quiet = await _simulate(tmp_path)
    assert "serving until SIGINT/SIGTERM" in quiet and "stopped" in quiet
    assert "0x" not in quiet and ">>>>>" not in quiet and "Invalid" not in quiet, quiet
    verbose = await _simulate(tmp_path, "--verbose")
    assert "send: 0x0 0x1 0x0 0x0 0x0 0x7 0x1 0x3 0x4" in verbose, verbose  # the wire log
