"""The control socket's views for live front ends (agent/control/views.py) and the
``onBehalfOf`` rule of its write operation, against a running agent and a simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.control.ctl import ControlError, local_command, request, socket_path
from agent.control.model import PeerCred
from agent.runtime import Agent
from drivers.sim.server import SimSpec, SimulatorServer
from tests.agent.test_runtime import SlowSink

CONFIG = """\
[gateway]
id = "gw-views"
state_dir = "state"
watch_config = 0

[metrics]
enabled = false

[[buses]]
id = "sim"
endpoint = "tcp://127.0.0.1:{port}"
timeout = 1.0

[[buses]]
id = "rs485"
endpoint = "rtu:///dev/ttyCityEdgeNone?baudrate=9600&parity=E"
timeout = 0.2

[[devices]]
id = "lamp-1"
bus = "sim"
profile = "cityedge/streetlight"
unit_id = 1
interval = 0.5

[[devices]]
id = "meter-11"
bus = "rs485"
profile = "cityedge/water_meter"
unit_id = 11
interval = 5.0

[[outputs]]
type = "jsonl"
id = "out"
path = "readings.jsonl"
"""


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Agent, Path, SimulatorServer]]:
    sim = SimulatorServer(SimSpec(streetlights=(1,), water_meters=(), cameras=()))
    await sim.start()
    sim_task = asyncio.create_task(sim.run())
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(port=sim.port))
    agent = Agent(load_config(cfg), sinks=[SlowSink(0)])
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(15):
            while not any(d == "lamp-1" for d, _ in agent.pipeline.last_values):
                await asyncio.sleep(0.05)
        yield agent, cfg, sim
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
        sim_task.cancel()
        await asyncio.gather(sim_task, return_exceptions=True)
        await sim.stop()


async def ask(agent: Agent, req: dict[str, Any]) -> dict[str, Any]:
    return await request(socket_path(agent.loaded.config.gateway.state_dir), req)


async def test_values_give_every_point_with_what_a_front_end_needs(running: Any) -> None:
    agent, _, _ = running
    reply = await ask(agent, {"op": "values"})
    assert reply["ok"] and set(reply["devices"]) == {"lamp-1", "meter-11"}
    lamp = reply["devices"]["lamp-1"]
    assert (lamp["kind"], lamp["bus"], lamp["profile"], lamp["interval"]) == (
        "streetlight",
        "sim",
        "cityedge/streetlight",
        0.5,
    )
    points = {p["point"]: p for p in lamp["points"]}
    dim = points["dim_level"]
    assert dim["type"] == "number" and dim["writable"] and (dim["min"], dim["max"]) == (0, 1)
    assert dim["metric"] == "illuminanceLevel" and dim["quality"] == "good"
    assert 0 <= dim["value"] <= 1 and dim["ageS"] >= 0 and dim["observedAt"].endswith("Z")
    assert points["lamp_switch"]["type"] == "enum"
    assert points["lamp_switch"]["labels"] == ["off", "on"]
    assert points["voltage"]["unit"] == "V" and not points["voltage"]["writable"]
    assert points["status_flags"]["type"] == "text" and not points["status_flags"]["writable"]
    # the meter's port does not exist: its points are described, without a value yet
    assert all("value" not in p for p in reply["devices"]["meter-11"]["points"])

    bare = await ask(agent, {"op": "values", "devices": ["lamp-1"], "meta": False})
    dim = next(p for p in bare["devices"]["lamp-1"]["points"] if p["point"] == "dim_level")
    assert set(dim) == {"point", "value", "quality", "ageS"}
    assert set(bare["devices"]["lamp-1"]) == {"points"}

    only = await ask(agent, {"op": "values", "devices": ["meter-11"]})
    assert list(only["devices"]) == ["meter-11"]
    bad = await ask(agent, {"op": "values", "devices": ["lamp-9"]})
    assert bad == {"ok": False, "error": "unknown device lamp-9"}


async def test_buses_and_the_measured_load(running: Any) -> None:
    agent, _, _ = running
    first = await ask(agent, {"op": "buses"})
    sim = next(b for b in first["buses"] if b["id"] == "sim")
    assert sim["connected"] and sim["requests"] > 0 and sim["busyS"] > 0
    assert sim["devices"] == ["lamp-1"] and sim["protocol"] == "modbus"
    rs485 = next(b for b in first["buses"] if b["id"] == "rs485")
    assert rs485["connected"] is False and rs485["linkError"]
    assert first["uptimeS"] > 0


async def test_plan_is_the_planners_and_matches_cityedge_plan(running: Any) -> None:
    agent, cfg, _ = running
    plan = await ask(agent, {"op": "plan"})
    buses = {b["id"]: b for b in plan["buses"]}
    assert buses["sim"]["plannedLoad"] is None  # network: no wire time to estimate
    lamp = buses["sim"]["devices"][0]
    assert lamp["id"] == "lamp-1" and lamp["points"] > 10
    assert {r["fc"] for g in lamp["groups"] for r in g["requests"]} <= {1, 2, 3, 4}
    serial = buses["rs485"]
    assert serial["serial"] and serial["line"] == "9600 8E1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "plan", str(cfg), stdout=asyncio.subprocess.PIPE
    )
    # a hang guard: one CLI run took over 30 s under qemu-user on a loaded machine
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    shown = re.findall(r"bus load: .* \(([\d.]+) %\)", out.decode())
    assert shown == [f"{serial['plannedLoad'] * 100:.1f}"], out.decode()
    requests = sum(len(g["requests"]) for g in serial["devices"][0]["groups"])
    assert f"total: {requests} request(s)" in out.decode()


async def test_warnings_are_the_daemons_recent_ones(running: Any) -> None:
    agent, _, _ = running
    logging.getLogger("cityedge.test").warning("cabinet door open")
    logging.getLogger("cityedge.test").warning("cabinet door open")
    reply = await ask(agent, {"op": "warnings"})
    door = [w for w in reply["warnings"] if w["message"] == "cabinet door open"]
    assert len(door) == 1 and door[0]["count"] == 2 and door[0]["level"] == "WARNING"
    # the meter's missing port is among them, logged by its bus owner
    assert any("meter-11" in w["message"] or "rs485" in w["message"] for w in reply["warnings"])
    later = await ask(agent, {"op": "warnings", "since": door[0]["seq"]})
    assert all(w["message"] != "cabinet door open" for w in later["warnings"])


async def test_write_on_behalf_of_a_front_end_user_is_audited_with_both_names(
    running: Any,
) -> None:
    agent, cfg, sim = running
    reply = await ask(
        agent,
        {
            "op": "write",
            "device": "lamp-1",
            "point": "dim_level",
            "text": "0.6",
            "onBehalfOf": "alice\x1b[31m",
        },
    )
    assert reply["status"] == "ok", reply
    assert sim.registers(1, "holding", 0, 1) == [60]
    record = json.loads((cfg.parent / "state" / "audit.jsonl").read_text().splitlines()[-1])
    assert record["onBehalfOf"] == "alice[31m"  # control characters dropped
    assert record["user"] and record["user"] != record["onBehalfOf"]


def test_only_root_and_the_agents_user_may_name_another_user() -> None:
    req = {"device": "lamp-1", "point": "dim_level", "value": 0.5, "onBehalfOf": "alice"}
    other = PeerCred(4242, 4242, 4242, (), "bob")
    with pytest.raises(ControlError, match="user 'bob' may not name another user"):
        local_command([], req, other, "c-1")
    me = PeerCred(os.getpid(), os.geteuid(), os.getegid(), (), "me")
    assert local_command([], req, me, "c-2").on_behalf_of == "alice"
    no_name = {**req, "onBehalfOf": "\x00"}
    with pytest.raises(ControlError, match="must name a user"):
        local_command([], no_name, me, "c-3")
    assert local_command([], {**req, "onBehalfOf": None}, other, "c-4").on_behalf_of is None
