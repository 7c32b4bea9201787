"""Exactly once across restarts, with a real agent process (`cityedge run` in the systemd
unit's environment), a real Mosquitto and a simulated streetlight whose register is read
independently: a command replayed after SIGTERM and after kill -9 gets the same answer with
`duplicate: true`, and the device is not written a second time (a value set at the cabinet
in between survives the replay). Used nonces survive too."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.control.model import Command
from agent.control.router import signed_fields
from agent.control.signing import signature
from bench.common import service_env
from drivers.sim.server import SimSpec, SimulatorServer

KEY = "r" * 32
CONFIG = """\
[gateway]
id = "gw-rs"
state_dir = "state"
watch_config = 0
shutdown_grace = 2.0

[[buses]]
id = "sim"
endpoint = "tcp://127.0.0.1:{port}"
timeout = 1.0

[[devices]]
id = "lamp-1"
bus = "sim"
profile = "cityedge/streetlight"
unit_id = 1
interval = 1.0

[[outputs]]
type = "mqtt"
id = "uplink"
brokers = [{{ url = "mqtt://127.0.0.1:{broker}" }}]
batch_latency = 0.05
health_interval = 0

[commands]
max_age = 120
require_signature = true
hmac_secret = "cmd_key"
"""
TOPIC = "cityedge/gw-rs/lamp-1/cmd"


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimSpec(streetlights=(1,), water_meters=(), cameras=())) as server:
        yield server


def command(cid: str, value: float, nonce: str) -> bytes:
    ts = int(time.time() * 1000)
    cmd = Command(cid, "native", "lamp-1", "dim_level", value, ts, nonce)
    sig = signature(KEY.encode(), signed_fields("gw-rs", cmd))
    body = {"id": cid, "point": "dim_level", "value": value, "ts": ts, "nonce": nonce, "sig": sig}
    return json.dumps(body).encode()


class Platform:
    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self.online = asyncio.Event()

    async def listen(self) -> None:
        async for msg in self.client.messages:
            topic = str(msg.topic)
            body = json.loads(msg.payload)
            if topic.endswith("/res"):
                self.answers.setdefault(body["id"], []).append(body)
            elif topic.endswith("/status") and not msg.retain and body["state"] == "online":
                self.online.set()  # published live, after the agent subscribed

    async def send(self, payload: bytes, cid: str) -> dict[str, Any]:
        n = len(self.answers.get(cid, ())) + 1
        await self.client.publish(TOPIC, payload, qos=1)
        for _ in range(400):
            if len(self.answers.get(cid, ())) >= n:
                return self.answers[cid][-1]
            await asyncio.sleep(0.025)
        raise AssertionError(f"no answer for {cid}")


async def start(tmp_path: Path, platform: Platform) -> asyncio.subprocess.Process:
    platform.online.clear()
    log = (tmp_path / "agent.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        str(tmp_path / "gateway.toml"),
        cwd=tmp_path,
        stdout=log,
        stderr=log,
        env={**os.environ, **service_env(tmp_path / "cache"), "CITYEDGE_SECRETS__CMD_KEY": KEY},
    )
    log.close()
    try:
        await asyncio.wait_for(platform.online.wait(), 30)
    except TimeoutError:
        proc.kill()
        raise AssertionError((tmp_path / "agent.log").read_text()[-3000:]) from None
    return proc


async def test_replay_after_sigterm_and_after_kill_9(
    sim: SimulatorServer, mosquitto: Any, tmp_path: Path
) -> None:
    broker = mosquitto()
    (tmp_path / "gateway.toml").write_text(CONFIG.format(port=sim.port, broker=broker.port))
    lamp: Any = sim.device(1)
    procs: list[asyncio.subprocess.Process] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="platform-rs") as client:
        await client.subscribe("cityedge/gw-rs/#", qos=1)
        platform = Platform(client)
        listener = asyncio.create_task(platform.listen())
        try:
            procs.append(agent := await start(tmp_path, platform))
            first = await platform.send(command("b-ok-2", 0.5, "nonce-1"), "b-ok-2")
            assert first["status"] == "ok" and sim.registers(1, "holding", 0, 1) == [50]
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(agent.wait(), 15) == 0

            lamp.set_dim(70)  # changed at the cabinet while the agent was down
            procs.append(agent := await start(tmp_path, platform))
            # the platform retries 1.5 minutes later: same id, fresh ts and nonce, new signature
            again = await platform.send(command("b-ok-2", 0.5, "nonce-1b"), "b-ok-2")
            assert again == {**first, "duplicate": True}
            assert sim.registers(1, "holding", 0, 1) == [70], "written a second time"
            reused = await platform.send(command("b-ok-3", 0.1, "nonce-1"), "b-ok-3")
            assert reused["status"] == "rejected" and "nonce already used" in reused["reason"]
            payload = command("k-9", 0.25, "nonce-9")
            answered = await platform.send(payload, "k-9")
            assert answered["status"] == "ok" and sim.registers(1, "holding", 0, 1) == [25]
            agent.kill()  # kill -9 right after the answer
            await agent.wait()

            lamp.set_dim(80)
            procs.append(agent := await start(tmp_path, platform))
            replay = await platform.send(payload, "k-9")  # the very same bytes (a redelivery)
            assert replay == {**answered, "duplicate": True}
            assert sim.registers(1, "holding", 0, 1) == [80], "written a second time"
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(agent.wait(), 15) == 0
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    audit = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    seen = [(a["id"], a["result"], a["duplicate"]) for a in audit]
    assert seen == [
        ("b-ok-2", "ok", False),
        ("b-ok-2", "ok", True),
        ("b-ok-3", "rejected", False),
        ("k-9", "ok", False),
        ("k-9", "ok", True),
    ]
