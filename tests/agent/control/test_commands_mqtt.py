"""Commands over a real Mosquitto into a simulated streetlight, and every rejection path
checked on the simulator's registers (nothing may reach the device)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.config import load_config
from agent.control.model import Command
from agent.control.router import signed_fields
from agent.control.signing import signature
from agent.runtime import Agent
from drivers.sim.server import SimSpec, SimulatorServer

CONFIG = """\
[gateway]
id = "gw-cmd"
location = [21.0285, 105.8542]  # NGSI-LD Streetlight entities require one
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
interval = 0.3

[[outputs]]
type = "mqtt"
id = "uplink"
brokers = [{{ url = "mqtt://127.0.0.1:{broker}" }}]
encoding = "{encoding}"
batch_latency = 0.05
health_interval = 0

[commands]
max_age = 60
rate_per_minute = 100
{signing}
"""


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimSpec(streetlights=(1,), water_meters=(), cameras=())) as server:
        lamp: Any = server.device(1)
        lamp.set_manual(True)  # lamp on whatever the hour in Hanoi when the test runs
        yield server


async def until(cond: Any, tries: int = 200) -> None:
    """Poll a condition every 25 ms (the broker and the bus run in real time)."""
    for _ in range(tries):
        if cond():
            return
        await asyncio.sleep(0.025)


class Platform:
    """The city platform's side: sends commands, collects answers and readings."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.answers: dict[str, dict[str, Any]] = {}
        self.readings: list[dict[str, Any]] = []

    async def listen(self) -> None:
        async for msg in self.client.messages:
            topic = str(msg.topic)
            if topic.endswith("/res"):
                body = json.loads(msg.payload)
                self.answers[body["id"]] = body
            elif topic.endswith("/data"):
                self.readings.extend(json.loads(msg.payload)["readings"])

    async def command(
        self, payload: bytes | dict[str, Any], cid: str, topic: str = "cityedge/gw-cmd/lamp-1/cmd"
    ) -> dict[str, Any]:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.answers.pop(cid, None)
        await self.client.publish(topic, raw, qos=1)
        for _ in range(200):
            if cid in self.answers:
                return self.answers[cid]
            await asyncio.sleep(0.025)
        raise AssertionError(f"no answer for {cid}")

    def power(self) -> list[float]:
        return [float(r["value"]) for r in self.readings if r["point"] == "active_power"]


async def run_agent(
    tmp_path: Path, sim: SimulatorServer, broker: Any, encoding: str = "native", signing: str = ""
) -> tuple[Agent, asyncio.Task[None]]:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        CONFIG.format(port=sim.port, broker=broker.port, encoding=encoding, signing=signing)
    )
    agent = Agent(load_config(cfg))
    return agent, asyncio.create_task(agent.run())


async def test_dim_round_trip_and_rejections(
    sim: SimulatorServer, mosquitto: Any, tmp_path: Path
) -> None:
    broker = mosquitto()
    agent, task = await run_agent(tmp_path, sim, broker)
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="platform") as client:
            await client.subscribe("cityedge/gw-cmd/#", qos=1)
            platform = Platform(client)
            listener = asyncio.create_task(platform.listen())
            while len(platform.power()) < 3:
                await asyncio.sleep(0.05)
            before = platform.power()[-1]
            assert before > 100  # rated 150 W at 100 %

            now = int(time.time() * 1000)
            ok = await platform.command(
                {"id": "c1", "point": "dim_level", "value": 0.4, "ts": now}, "c1"
            )
            assert ok["status"] == "ok" and ok["value"] == pytest.approx(0.4)
            assert sim.registers(1, "holding", 0, 1) == [40]
            # the power reading falls with the dim level (150 W rated -> about 60 W)
            await until(lambda: platform.power()[-1] < before * 0.6, 200)
            after = platform.power()[-1]
            assert after == pytest.approx(before * 0.4, rel=0.15)

            rejected = [
                ({"id": "r1", "point": "voltage", "value": 1, "ts": now}, "read-only"),
                ({"id": "r2", "point": "dim_level", "value": 1.5, "ts": now}, "maximum"),
                ({"id": "r3", "point": "dim_level", "value": "x", "ts": now}, "number"),
                ({"id": "r4", "point": "dim_level", "value": 0.1, "ts": now - 3_600_000}, "stale"),
                (
                    {"id": "r5", "point": "lamp_switch", "value": "dazzle", "ts": now},
                    "expects one of",
                ),
            ]
            for body, reason in rejected:
                res = await platform.command(body, str(body["id"]))
                assert res["status"] == "rejected" and reason in res["reason"], res
            res = await platform.command(b'{"id": "r6", "point": ', "r6")
            assert res["status"] == "rejected" and "malformed JSON" in res["reason"]
            res = await platform.command(
                {"id": "r7", "point": "dim_level", "value": 0.1},
                "r7",
                topic="cityedge/gw-cmd/lamp-9/cmd",
            )
            assert res["status"] == "rejected" and "unknown device" in res["reason"]
            dup = await platform.command(
                {"id": "c1", "point": "dim_level", "value": 0.9, "ts": now}, "c1"
            )
            assert dup["status"] == "ok" and dup.get("duplicate") is True
            ping = await platform.command(
                {"id": "p1", "action": "ping"}, "p1", topic="cityedge/gw-cmd/cmd"
            )
            assert ping["status"] == "ok"
            assert sim.registers(1, "holding", 0, 1) == [40]  # nothing else reached it
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
    audit = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert {a["id"]: a["result"] for a in audit}["c1"] == "ok"
    assert sum(a["result"] == "rejected" for a in audit) >= 7


async def test_signed_commands(
    sim: SimulatorServer, mosquitto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYEDGE_SECRETS__CMD_KEY", "k" * 32)
    broker = mosquitto()
    agent, task = await run_agent(
        tmp_path, sim, broker, signing='require_signature = true\nhmac_secret = "cmd_key"'
    )
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="platform2") as client:
            await client.subscribe("cityedge/gw-cmd/#", qos=1)
            platform = Platform(client)
            listener = asyncio.create_task(platform.listen())
            await asyncio.sleep(0.5)
            now = int(time.time() * 1000)
            good = Command("s1", "native", "lamp-1", "dim_level", 0.2, now, "n1")
            body = {
                "id": "s1",
                "point": "dim_level",
                "value": 0.2,
                "ts": now,
                "nonce": "n1",
                "sig": signature(b"k" * 32, signed_fields("gw-cmd", good)),
            }
            forged = {**body, "id": "s2", "value": 1.0}
            res = await platform.command(forged, "s2")
            assert res["status"] == "rejected" and res["reason"] == "bad signature"
            assert sim.registers(1, "holding", 0, 1) == [100]
            res = await platform.command(body, "s1")
            assert res["status"] == "ok", res
            assert sim.registers(1, "holding", 0, 1) == [20]
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)


async def test_remote_config_update(sim: SimulatorServer, mosquitto: Any, tmp_path: Path) -> None:
    broker = mosquitto()
    agent, task = await run_agent(tmp_path, sim, broker)
    text = (tmp_path / "gateway.toml").read_text()
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="platform3") as client:
            await client.subscribe("cityedge/gw-cmd/config/res", qos=1)
            platform = Platform(client)
            listener = asyncio.create_task(platform.listen())
            await asyncio.sleep(0.5)
            topic = "cityedge/gw-cmd/config"
            good = text.replace("interval = 0.3", "interval = 0.7")
            res = await platform.command({"id": "cfg1", "toml": good}, "cfg1", topic=topic)
            assert res["status"] == "ok", res
            assert agent.loaded.config.devices[0].interval == 0.7
            assert (tmp_path / "gateway.toml.previous").read_text() == text

            bad = good.replace("unit_id = 1", "unit_id = 900")
            res = await platform.command({"id": "cfg2", "toml": bad}, "cfg2", topic=topic)
            assert res["status"] == "failed" and "unit_id" in res["reason"], res
            assert (tmp_path / "gateway.toml").read_text() == good  # nothing changed

            moved = good.replace(f"127.0.0.1:{broker.port}", "127.0.0.1:1")
            res = await platform.command({"id": "cfg3", "toml": moved}, "cfg3", topic=topic)
            assert res["status"] == "failed" and "network destinations" in res["reason"]
            assert agent.loaded.config.devices[0].interval == 0.7
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)


async def test_sparkplug_dcmd_and_malformed_protobuf(
    sim: SimulatorServer, mosquitto: Any, tmp_path: Path
) -> None:
    from agent.forward.encoders import sparkplug_b_pb2 as pb
    from agent.forward.encoders.sparkplug_codec import DOUBLE, set_value

    broker = mosquitto()
    agent, task = await run_agent(tmp_path, sim, broker, encoding="sparkplug")
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="scada") as client:
            await client.subscribe("cityedge/gw-cmd/#", qos=1)
            platform = Platform(client)
            listener = asyncio.create_task(platform.listen())
            await asyncio.sleep(0.5)
            topic = "spBv1.0/cityedge/DCMD/gw-cmd/lamp-1"
            cmd = pb.Payload(timestamp=int(time.time() * 1000), seq=0)
            m = cmd.metrics.add(name="dim_level", datatype=DOUBLE)
            set_value(m, DOUBLE, 0.3)
            await client.publish(topic, cmd.SerializeToString(), qos=1)
            await until(lambda: sim.registers(1, "holding", 0, 1) == [30], 200)
            assert sim.registers(1, "holding", 0, 1) == [30]
            await until(lambda: platform.answers, 100)
            (answer,) = platform.answers.values()
            assert answer["status"] == "ok" and answer["target"] == "dim_level"

            platform.answers.clear()
            await client.publish(topic, b"\x0a\xff\xff\xff garbage", qos=1)
            await until(lambda: platform.answers, 100)
            (bad,) = platform.answers.values()
            assert bad["status"] == "rejected" and "protobuf" in bad["reason"]
            assert sim.registers(1, "holding", 0, 1) == [30]
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)


async def test_fiware_iot_agent_command(
    sim: SimulatorServer, mosquitto: Any, tmp_path: Path
) -> None:
    broker = mosquitto()
    agent, task = await run_agent(tmp_path, sim, broker, encoding="ngsild")
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="iota") as client:
            await client.subscribe("/gw-cmd/lamp-1/cmdexe", qos=1)
            await asyncio.sleep(0.5)
            await client.publish("/gw-cmd/lamp-1/cmd", b'{"illuminanceLevel": 0.55}', qos=1)
            async with asyncio.timeout(10):
                async for msg in client.messages:
                    result = json.loads(msg.payload)
                    break
            assert result["illuminanceLevel"]["status"] == "ok", result
            assert sim.registers(1, "holding", 0, 1) == [55]
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
