"""Auxiliary failures never stop collection (issue 19).

The agent is started as the technician would run it, with its metrics port held by another
process (a socket of this test, bound to the port): it must go on polling the simulator and
publishing to a real Mosquitto, say why /health is missing in one log line, in
``cityedge status`` and in the MQTT health message, and stop cleanly: no traceback, no
"exception was never retrieved". The supervisor itself (retry, recovery, a service with a bug)
is tested in-process with short retry delays.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.ops.alarms import Alarms, ServiceUnavailable, supervise
from agent.ops.httpd import HttpEndpoint
from drivers.sim.server import SimSpec, SimulatorServer

CONFIG = """\
[gateway]
id = "gw-aux"
state_dir = "{state}"
watch_config = 0

[metrics]
port = {busy}

[[buses]]
id = "sim"
endpoint = "tcp://127.0.0.1:{sim}"
timeout = 0.5

[[devices]]
id = "lamp-1"
bus = "sim"
profile = "cityedge/streetlight"
unit_id = 1
interval = 0.2

[[outputs]]
type = "mqtt"
id = "uplink"
brokers = [{{ url = "mqtt://127.0.0.1:{broker}" }}]
health_interval = 0.5
batch_latency = 0.05
"""


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    # a hang guard: one CLI run took over 30 s under qemu-user on a loaded machine
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def test_busy_metrics_port_keeps_collecting(tmp_path: Path, mosquitto: Any) -> None:
    broker = mosquitto()
    sim = SimulatorServer(SimSpec(streetlights=(1,), water_meters=(), cameras=()))
    await sim.start()
    sim_task = asyncio.create_task(sim.run())
    holder = socket.socket()  # bound, not listening: the port is taken and refuses connections
    holder.bind(("127.0.0.1", 0))
    busy = holder.getsockname()[1]
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        CONFIG.format(state=tmp_path / "state", busy=busy, sim=sim.port, broker=broker.port)
    )
    env = {**os.environ, "COLUMNS": "200"}
    log = tmp_path / "agent.log"
    with log.open("wb") as logf:
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "run", str(cfg),
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=logf,
        )  # fmt: skip
    try:
        data_after_alarm = 0
        health: dict[str, Any] = {}
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="platform") as client:
            await client.subscribe("cityedge/gw-aux/#", qos=1)
            async with asyncio.timeout(30):
                async for msg in client.messages:
                    topic = str(msg.topic)
                    if topic.endswith("/health"):
                        body = json.loads(bytes(msg.payload))
                        health = body if body.get("alarms") else health
                    elif topic == "cityedge/gw-aux/data" and health:
                        data_after_alarm += 1
                        if data_after_alarm >= 3:
                            break
        # the platform is told why, and readings keep arriving after it was
        assert any(f"127.0.0.1:{busy}" in a and "in use" in a for a in health["alarms"])
        assert health["alarms"][0].startswith("http: metrics/health endpoint cannot listen")

        # /health itself is unreachable: the port is the other process's
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", busy)

        rc, out = await cli("status", "-c", str(cfg), "--json", env=env)
        assert rc == 0, out
        status = json.loads(out)
        assert [a["source"] for a in status["alarms"]] == ["http"]
        assert "in use by another process" in status["alarms"][0]["message"]
        assert status["devices"]["lamp-1"]["polls"] >= 3
        rc, out = await cli("status", "-c", str(cfg), env=env)
        assert (
            rc == 0
            and f"ALARM http: metrics/health endpoint cannot listen on 127.0.0.1:{busy}" in out
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(agent.wait(), 20)
        holder.close()
        sim_task.cancel()
        await asyncio.gather(sim_task, return_exceptions=True)
        await sim.stop()
    text = log.read_text()
    assert rc == 0, text
    lines = [ln for ln in text.splitlines() if "cannot listen" in ln]
    assert len(lines) == 1 and "ERROR" in lines[0], text  # once, not on every retry
    assert "polling and forwarding go on" in lines[0]
    for bad in ("Traceback", "never retrieved", "CRITICAL"):
        assert bad not in text, text


async def test_supervisor_retries_and_clears(caplog: pytest.LogCaptureFixture) -> None:
    """A service that cannot bind retries with backoff; once the port is free it listens and the
    alarm is cleared, with one line each way."""
    caplog.set_level(logging.INFO, "cityedge.alarms")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    ep = HttpEndpoint("127.0.0.1", port, {})
    alarms = Alarms()
    task = asyncio.create_task(
        supervise("http", ep.serve, alarms, retry_min=0.05, retry_max=0.2, settle=0.05)
    )
    try:
        async with asyncio.timeout(5):
            while not alarms.active():
                await asyncio.sleep(0.01)
        assert "in use by another process" in alarms.active()[0].message
        await asyncio.sleep(0.3)  # several retries, all still failing
        holder.close()
        await asyncio.wait_for(ep.listening.wait(), 5)
        async with asyncio.timeout(5):
            while alarms.active():
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    msgs = [r.getMessage() for r in caplog.records if r.name == "cityedge.alarms"]
    assert len([m for m in msgs if "cannot listen" in m and "retrying" in m]) == 1, msgs
    assert any(m.startswith("http: running again") for m in msgs), msgs


async def test_a_service_bug_is_traced_once_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def buggy() -> None:
        nonlocal runs
        runs += 1
        raise KeyError("oops")

    alarms = Alarms()
    task = asyncio.create_task(supervise("watchdog", buggy, alarms, retry_min=0.01, retry_max=0.02))
    while runs < 4:
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert str(alarms.active()[0]) == "watchdog: KeyError: 'oops'"
    traced = [r for r in caplog.records if r.exc_info]
    assert len(traced) == 1  # the traceback of a bug once, not on every retry


async def test_a_service_that_ends_clears_its_alarm() -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ServiceUnavailable("not yet")

    alarms = Alarms()
    factory: Callable[[], Coroutine[Any, Any, None]] = flaky
    await asyncio.wait_for(supervise("x", factory, alarms, retry_min=0.01), 5)
    assert calls == 2 and not alarms.active()


def test_an_alarm_degrades_health_with_its_reason() -> None:
    from agent.ops.health import HealthReport
    from tests.agent.ops.fakes import Clock, FakeAgent

    agent = FakeAgent({"rs485": {"a": 5}})
    agent.alarms.set("control", "control socket /run/cityedge/control.sock: Read-only file system")
    doc = HealthReport(
        agent, alarms=agent.alarms, mono=Clock(1010.0), wall=Clock(1.79e9)
    ).document()
    assert doc["status"] == "degraded"
    assert doc["reasons"] == [
        "control: control socket /run/cityedge/control.sock: Read-only file system"
    ]
    assert [a["source"] for a in doc["alarms"]] == ["control"]
    agent.alarms.clear("control")
    doc = HealthReport(
        agent, alarms=agent.alarms, mono=Clock(1010.0), wall=Clock(1.79e9)
    ).document()
    assert doc["status"] == "ok" and doc["alarms"] == []


async def test_a_control_socket_that_cannot_be_made_is_an_alarm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime directory is unusable (here: a file where the directory should be): the
    control service says so in status, and the buses keep polling."""
    from agent.config import load_config
    from agent.control.ctl import status_of
    from agent.runtime import Agent
    from tests.agent.test_runtime import SlowSink

    blocker = tmp_path / "run"
    blocker.write_text("not a directory")
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(blocker / "cityedge"))
    sim = SimulatorServer(SimSpec(streetlights=(1,), water_meters=(), cameras=()))
    await sim.start()
    sim_task = asyncio.create_task(sim.run())
    cfg = tmp_path / "gateway.toml"
    text = CONFIG.format(state=tmp_path / "state", busy=0, sim=sim.port, broker=1)
    cfg.write_text(text[: text.index("[[outputs]]")])  # [metrics] port = 0: any free port
    sink = SlowSink(0)
    agent = Agent(load_config(cfg), sinks=[sink])
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(10):
            while not agent.alarms.active():
                await asyncio.sleep(0.02)
            seen = len(sink.pending)
            while len(sink.pending) < seen + 3:  # still collecting after the alarm
                await asyncio.sleep(0.02)
        [alarm] = status_of(agent)["alarms"]
        assert alarm["source"] == "control"
        assert (
            "Not a directory" in alarm["message"]
            and "cityedge status/read/write" in alarm["message"]
        )
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
        sim_task.cancel()
        await asyncio.gather(sim_task, return_exceptions=True)
        await sim.stop()
