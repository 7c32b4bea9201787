"""status, read, outbox and watch --once for people, and their --json, against a running
agent that polls the simulators and publishes to a real Mosquitto; the control socket's
``snapshot`` operation they use."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.control.ctl import request, socket_path
from agent.runtime import Agent
from drivers.sim.server import SimSpec, SimulatorServer

CONFIG = """\
[gateway]
id = "gw-human"
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

[[devices]]
id = "meter-11"
bus = "sim"
profile = "cityedge/water_meter"
unit_id = 11
interval = 0.5

[[devices]]
id = "lamp-9"
bus = "sim"
profile = "cityedge/streetlight"
unit_id = 9
interval = 0.5

[[outputs]]
type = "mqtt"
id = "uplink"
brokers = [{{ url = "mqtt://127.0.0.1:{broker}" }}]
health_interval = 0
"""


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimSpec()) as server:
        yield server


async def cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    # a hang guard: one CLI run took over 30 s under qemu-user on a loaded machine
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def line_of(out: str, start: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(start))


async def test_status_read_outbox_and_watch_for_people_and_machines(
    sim: SimulatorServer, mosquitto: Any, tmp_path: Path
) -> None:
    broker = mosquitto()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(port=sim.port, broker=broker.port))
    loaded = load_config(cfg)
    agent = Agent(loaded)
    task = asyncio.create_task(agent.run())
    path = socket_path(loaded.config.gateway.state_dir)
    try:
        for _ in range(200):  # both live devices polled, the absent unit reported offline
            st = agent.drivers["sim"].stats.devices
            if (
                st["lamp-1"].polls >= 2
                and st["meter-11"].polls >= 2
                and st["lamp-9"].state == "offline"
                and path.exists()
            ):
                break
            await asyncio.sleep(0.05)

        snap = await request(path, {"op": "snapshot"})
        assert snap["ok"] and snap["gateway"] == "gw-human"
        assert [b["id"] for b in snap["buses"]] == ["sim"] and snap["buses"][0]["connected"]
        assert [d["id"] for d in snap["devices"]] == ["lamp-1", "meter-11", "lamp-9"]
        lamp, _, absent = snap["devices"]
        assert lamp["state"] == "online" and lamp["profile"] == "cityedge/streetlight"
        # values in the profile's order, each with its unit, quality and age
        names = [p.name for p in loaded.profiles["cityedge/streetlight"].points]
        assert [v["point"] for v in lamp["values"]] == [
            n for n in names if n in {v["point"] for v in lamp["values"]}
        ]
        volt = next(v for v in lamp["values"] if v["point"] == "voltage")
        assert volt["unit"] == "V" and volt["quality"] == "good" and volt["ageS"] < 5
        assert absent["state"] == "offline" and absent["reason"] == "timeout"
        assert "exception 11" in absent["detail"]  # its one poll: every value bad, with why
        assert {(v["quality"], v["reason"]) for v in absent["values"]} == {("bad", "exception 11")}
        only = await request(path, {"op": "snapshot", "devices": ["meter-11"], "values": False})
        assert [d["id"] for d in only["devices"]] == ["meter-11"]
        assert "values" not in only["devices"][0]

        rc, out, err = await cli("status", "-c", str(cfg), cwd=tmp_path)
        assert rc == 0, err
        assert "{" not in out and "Sink" not in out, out  # no dicts, no class names
        assert line_of(out, "lamp-1 ").split()[:3] == ["lamp-1", "sim", "online"]
        assert "offline (timeout" in line_of(out, "lamp-9 ")
        assert "devices: 2 online, 1 offline" in out
        assert line_of(out, "meter-11 ").split()[0] == "meter-11"
        values = out[out.index("last values") :]
        assert "dim_level 1.0" in values and "volume " in values and " L" in values
        uplink = line_of(out, "uplink ")
        assert "mqtt (native)" in uplink and "connected mqtt://127.0.0.1:" in uplink
        assert re.search(r"  \d+  .*  0  [\d.]+ [KM]iB of [\d.]+ [MG]iB$", uplink), uplink

        rc, out, err = await cli("status", "-c", str(cfg), "--json", cwd=tmp_path)
        assert rc == 0, err
        doc = json.loads(out)
        assert doc["sinks"][0]["type"] == "mqtt" and doc["sinks"][0]["encoding"] == "native"
        assert {v["point"] for v in doc["devices"]["meter-11"]["values"]} >= {"volume"}

        rc, out, err = await cli("read", "-c", str(cfg), "meter-11", cwd=tmp_path)
        assert rc == 0, err
        assert out.splitlines()[0].split() == ["point", "value", "unit", "quality", "age", "metric"]
        row = line_of(out, "flow_rate ").split()
        assert row[2:4] == ["m³/h", "good"] and row[-1] == "flow"
        assert line_of(out, "temperature ").split()[2] == "°C"

        rc, out, err = await cli("watch", "-c", str(cfg), "--once", "lamp-1", cwd=tmp_path)
        assert rc == 0, err
        assert "gateway gw-human" in out and "link up" in out
        assert line_of(out, "lamp-1 ").split()[1] == "online" and "meter-11" not in out
        assert "voltage " in out and " V" in out
        rc, _, err = await cli("watch", "-c", str(cfg), "--once", "lamp-7", cwd=tmp_path)
        assert rc == 2 and "unknown device lamp-7" in err
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)

    rc, out, err = await cli("outbox", "-c", str(cfg), "--json", cwd=tmp_path)
    assert rc == 0, err
    depth = json.loads(out)["uplink"]["depth"]  # (what the broker had not acked at the stop)
    rc, out, err = await cli("outbox", "-c", str(cfg), cwd=tmp_path)
    assert rc == 0, err
    assert line_of(out, "uplink ").split()[1] == f"{depth:,}".replace(",", " ")
    rc, _, err = await cli("watch", "-c", str(cfg), cwd=tmp_path)
    assert rc == 3 and "no running agent answers" in err
