"""Every remote command channel under each of its policies, through a real Mosquitto into a
simulated streetlight. After each command the device's registers are read independently from
the simulator, and at the end every command id has exactly one audit record (two for a
replay: the second marked duplicate)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiomqtt
import pytest

from agent.config import load_config
from agent.control.model import Command
from agent.control.parse import payload_id
from agent.control.router import signed_fields
from agent.control.signing import signature
from agent.forward.encoders import sparkplug_b_pb2 as pb
from agent.forward.encoders.sparkplug_codec import DOUBLE, STRING, set_value
from agent.runtime import Agent
from drivers.sim.models import StreetlightModel
from drivers.sim.server import SimSpec, SimulatorServer

GW = "gw-pol"
KEY = b"k" * 32
CONFIG = """\
[gateway]
id = "gw-pol"
state_dir = "state"
watch_config = 0
shutdown_grace = 2.0
location = [21.0285, 105.8542]  # NGSI-LD Streetlight entities require one

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
type = "mqtt"
id = "scada"
brokers = [{{ url = "mqtt://127.0.0.1:{broker}" }}]
encoding = "sparkplug"
topic_prefix = "spb"
batch_latency = 0.05
health_interval = 0

[[outputs]]
type = "mqtt"
id = "fiware"
brokers = [{{ url = "mqtt://127.0.0.1:{broker}" }}]
encoding = "ngsild"
topic_prefix = "iot"
apikey = "key1"
batch_latency = 0.05
health_interval = 0

[commands]
max_age = 60
rate_per_minute = 100
hmac_secret = "cmd_key"

[commands.policy]
{policy}
"""


def lamp(sim: SimulatorServer) -> StreetlightModel:
    """The simulated streetlight at unit 1."""
    return cast(StreetlightModel, sim.device(1))


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimSpec(streetlights=(1,), water_meters=(), cameras=())) as server:
        lamp(server).set_manual(True)
        yield server


@dataclass
class Platform:
    """The platform's side: one client publishing commands of every kind and collecting
    every answer (native and Sparkplug answers on .../res, IoT Agent ones on cmdexe)."""

    client: aiomqtt.Client
    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    async def listen(self) -> None:
        async for msg in self.client.messages:
            topic = str(msg.topic)
            if not (topic.endswith("/res") or topic.endswith("/cmdexe")):
                continue
            body = json.loads(msg.payload)
            if topic.endswith("/cmdexe"):  # {"<command>": result} or {"error": result}
                (body,) = body.values()
            self.answers.setdefault(body["id"], []).append(body)

    async def send(self, topic: str, payload: bytes, cid: str, n: int = 1) -> dict[str, Any]:
        """Publish and wait for the n-th answer carrying ``cid``."""
        await self.client.publish(topic, payload, qos=1)
        for _ in range(400):
            if len(self.answers.get(cid, ())) >= n:
                return self.answers[cid][n - 1]
            await asyncio.sleep(0.025)
        raise AssertionError(f"no answer {n} for {cid} on {topic}")


def signed(
    cid: str, point: str, value: object, nonce: str, *, key: bytes = KEY, **kw: Any
) -> bytes:
    ts = kw.pop("ts", int(time.time() * 1000))
    device = kw.pop("device", "lamp-1")
    cmd = Command(cid, "native", device, point, value, ts, nonce)  # type: ignore[arg-type]
    body = {"id": cid, "point": point, "value": value, "ts": ts, "nonce": nonce}
    body["sig"] = signature(key, signed_fields(GW, cmd))
    return json.dumps({**body, **kw}).encode()


def dcmd(*metrics: tuple[str, int, object]) -> bytes:
    msg = pb.Payload(timestamp=int(time.time() * 1000), seq=0)
    for name, datatype, value in metrics:
        m = msg.metrics.add(name=name, datatype=datatype)
        set_value(m, datatype, value)  # type: ignore[arg-type]
    return msg.SerializeToString()


class Gateway:
    """An agent in this process with one policy table, and the ways to look at it."""

    def __init__(self, tmp: Path, sim: SimulatorServer, broker: Any, policy: str) -> None:
        (tmp / "gateway.toml").write_text(
            CONFIG.format(port=sim.port, broker=broker.port, policy=policy)
        )
        self.tmp, self.sim = tmp, sim
        self.agent = Agent(load_config(tmp / "gateway.toml"))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Gateway:
        self.task = asyncio.create_task(self.agent.run())
        sinks: list[Any] = self.agent.sinks
        for _ in range(400):  # connected means subscribed (agent/forward/sinks/mqtt.py)
            if all(s.link.connected for s in sinks):
                break
            await asyncio.sleep(0.025)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.agent.request_shutdown()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)

    def registers(self) -> list[int]:
        return self.sim.registers(1, "holding", 0, 3)  # dim %, lamp switch, working mode

    def audit(self) -> list[dict[str, Any]]:
        path = self.tmp / "state" / "audit.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()]


async def _platform(broker: Any, name: str) -> tuple[Platform, asyncio.Task[None], aiomqtt.Client]:
    client = aiomqtt.Client("127.0.0.1", broker.port, identifier=name)
    await client.__aenter__()
    await client.subscribe("#", qos=1)
    p = Platform(client)
    return p, asyncio.create_task(p.listen()), client


NATIVE = "spb/gw-pol/lamp-1/cmd"
GATEWAY_TOPIC = "spb/gw-pol/cmd"
DCMD = "spBv1.0/spb/DCMD/gw-pol/lamp-1"
IOTA = "/key1/lamp-1/cmd"


async def test_signature_for_native_broker_for_sparkplug_and_iota(
    sim: SimulatorServer, mosquitto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYEDGE_SECRETS__CMD_KEY", KEY.decode())
    broker = mosquitto()
    policy = 'native = "signature"\nsparkplug = "broker"\niota = "broker"\nlocal = "peer"'
    async with Gateway(tmp_path, sim, broker, policy) as gw:
        p, listener, client = await _platform(broker, "platform-a")
        try:
            regs = gw.registers()
            assert regs[2] == 1  # manual mode

            async def rejected(topic: str, payload: bytes, cid: str, reason: str) -> None:
                before = gw.registers()
                res = await p.send(topic, payload, cid)
                assert res["status"] == "rejected" and reason in res["reason"], res
                assert gw.registers() == before, f"{cid} reached the device"

            # native under "signature"
            body = {"id": "n1", "point": "dim_level", "value": 0.3, "ts": int(time.time() * 1000)}
            await rejected(NATIVE, json.dumps(body).encode(), "n1", "requires signed commands")
            ok = await p.send(NATIVE, signed("n2", "dim_level", 0.3, "nonce-2"), "n2")
            assert ok["status"] == "ok" and ok["value"] == 0.3
            assert gw.registers()[0] == 30
            lamp(gw.sim).set_dim(77)  # changed at the cabinet: a second write would undo it
            replay = signed("n2", "dim_level", 0.3, "nonce-2")
            dup = await p.send(NATIVE, replay, "n2", n=2)
            assert dup == {**ok, "duplicate": True}
            assert gw.registers()[0] == 77
            await rejected(
                NATIVE,
                signed("n3", "dim_level", 0.1, "nonce-3", key=b"x" * 32),
                "n3",
                "bad signature",
            )
            await rejected(
                NATIVE, signed("n4", "dim_level", 0.1, "nonce-2"), "n4", "nonce already used"
            )
            stale = signed("n5", "dim_level", 0.1, "nonce-5", ts=int(time.time() * 1000) - 600_000)
            await rejected(NATIVE, stale, "n5", "stale")
            no_nonce = json.loads(signed("n6", "dim_level", 0.1, "x"))
            del no_nonce["nonce"]
            await rejected(
                NATIVE, json.dumps(no_nonce).encode(), "n6", "timestamp (ts) and a nonce"
            )
            await rejected(
                NATIVE, signed("n7", "dim_level", 1.5, "nonce-7"), "n7", "above the maximum"
            )
            await rejected(NATIVE, signed("n8", "voltage", 1, "nonce-8"), "n8", "read-only")
            await rejected(
                NATIVE, signed("n9", "lamp_switch", "dazzle", "nonce-9"), "n9", "expects one of"
            )
            big = b'{"id":"n10","point":"dim_level","value":"' + b"x" * 20_000 + b'"}'
            await rejected(NATIVE, big, "n10", "payload too large")
            await rejected(NATIVE, b"", "unknown", "empty payload")
            ping = json.dumps({"id": "g1", "action": "ping"}).encode()
            await rejected(GATEWAY_TOPIC, ping, "g1", "requires signed commands")
            ts = int(time.time() * 1000)
            gcmd = Command("g2", "native", None, "ping", None, ts, "nonce-g2")
            gbody = {"id": "g2", "action": "ping", "ts": ts, "nonce": "nonce-g2"}
            gbody["sig"] = signature(KEY, signed_fields(GW, gcmd))
            assert (await p.send(GATEWAY_TOPIC, json.dumps(gbody).encode(), "g2"))["status"] == "ok"

            # Sparkplug under "broker"
            payload = dcmd(("dim_level", DOUBLE, 0.5))
            cid = payload_id("spb", DCMD, payload) + "-0"
            assert (await p.send(DCMD, payload, cid))["status"] == "ok"
            assert gw.registers()[0] == 50
            lamp(gw.sim).set_dim(66)
            again = await p.send(DCMD, payload, cid, n=2)
            assert again["status"] == "ok" and again["duplicate"] is True
            assert gw.registers()[0] == 66
            half = dcmd(("dim_level", DOUBLE, 0.6), ("working_mode", STRING, "turbo"))
            hid = payload_id("spb", DCMD, half)
            await rejected(DCMD, half, hid + "-1", "expects one of")
            assert "not executed: working_mode" in p.answers[hid + "-0"][0]["reason"]
            empty = pb.Payload(timestamp=int(time.time() * 1000), seq=1).SerializeToString()
            await rejected(DCMD, empty, payload_id("spb", DCMD, empty), "without metrics")
            huge = dcmd(("dim_level", STRING, "x" * (2 * 1024 * 1024)))
            await rejected(DCMD, huge, payload_id("spb", DCMD, huge), "payload too large")
            garbage = b"\x0a\xff\xff\xff garbage"
            await rejected(DCMD, garbage, payload_id("spb", DCMD, garbage), "protobuf")
            fine = dcmd(("dim_level", DOUBLE, 0.405))
            rounded = await p.send(DCMD, fine, payload_id("spb", DCMD, fine) + "-0")
            assert (rounded["value"], rounded["requested"]) == (0.4, 0.405)
            assert gw.registers()[0] == 40

            # IoT Agent under "broker"
            iota = b'{"illuminanceLevel": 0.55}'
            iid = payload_id("iota", IOTA, iota)
            assert (await p.send(IOTA, iota, iid))["status"] == "ok"
            assert gw.registers()[0] == 55
            lamp(gw.sim).set_dim(44)
            assert (await p.send(IOTA, iota, iid, n=2))["duplicate"] is True
            assert gw.registers()[0] == 44
            bad = b'{"lampSwitch": "dazzle"}'
            await rejected(IOTA, bad, payload_id("iota", IOTA, bad), "expects one of")
            huge_iota = b'{"lampSwitch": "' + b"x" * 17_000 + b'"}'
            await rejected(IOTA, huge_iota, payload_id("iota", IOTA, huge_iota), "too large")
            await rejected(IOTA, b" ", payload_id("iota", IOTA, b" "), "empty payload")
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await client.__aexit__(None, None, None)
    audit = gw.audit()
    ids = [a["id"] for a in audit]
    for cid, answers in p.answers.items():
        assert ids.count(cid) == len(answers), cid  # one record per command received
        assert [a["duplicate"] for a in audit if a["id"] == cid] == [
            bool(x.get("duplicate")) for x in answers
        ]
    assert {a["source"] for a in audit} == {"native", "sparkplug", "iota"}
    assert all("topic" in a for a in audit)


async def test_broker_for_native_and_every_other_channel_off(
    sim: SimulatorServer, mosquitto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYEDGE_SECRETS__CMD_KEY", KEY.decode())
    broker = mosquitto()
    policy = 'native = "broker"\nconfig = "off"\nsparkplug = "off"\niota = "off"\nlocal = "off"'
    async with Gateway(tmp_path, sim, broker, policy) as gw:
        p, listener, client = await _platform(broker, "platform-b")
        try:
            now = int(time.time() * 1000)
            body = {"id": "b1", "point": "dim_level", "value": 0.2, "ts": now}
            assert (await p.send(NATIVE, json.dumps(body).encode(), "b1"))["status"] == "ok"
            assert gw.registers()[0] == 20
            body = {"id": "b2", "point": "dim_level", "value": 0.9}  # no ts: allowed here
            assert (await p.send(NATIVE, json.dumps(body).encode(), "b2"))["status"] == "ok"
            assert gw.registers()[0] == 90
            forged = json.loads(signed("b3", "dim_level", 0.1, "n3", key=b"x" * 32))
            res = await p.send(NATIVE, json.dumps(forged).encode(), "b3")
            assert res["reason"] == "bad signature"
            cases = [
                ("spb/gw-pol/config", json.dumps({"id": "b4", "toml": "x = 1"}).encode(), "b4"),
                (DCMD, dcmd(("dim_level", DOUBLE, 0.1)), None),
                (IOTA, b'{"illuminanceLevel": 0.1}', None),
            ]
            for topic, payload, given in cases:
                kind = "spb" if topic == DCMD else "iota"
                cid = given or payload_id(kind, topic, payload) + ("-0" if kind == "spb" else "")
                res = await p.send(topic, payload, cid)
                assert res["status"] == "rejected" and "channel is off" in res["reason"], res
            assert gw.registers()[0] == 90
            from agent.control.ctl import request, socket_path

            reply = await request(
                socket_path(tmp_path / "state"),
                {
                    "op": "write",
                    "device": "lamp-1",
                    "point": "dim_level",
                    "text": "0.1",
                    "id": "b8",
                },
            )
            assert (
                reply["status"] == "rejected" and "local command channel is off" in reply["reason"]
            )
            assert gw.registers()[0] == 90
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await client.__aexit__(None, None, None)
    ids = [a["id"] for a in gw.audit()]
    assert sorted(ids) == sorted([*p.answers, "b8"])


async def test_native_off(
    sim: SimulatorServer, mosquitto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYEDGE_SECRETS__CMD_KEY", KEY.decode())
    broker = mosquitto()
    async with Gateway(tmp_path, sim, broker, 'native = "off"') as gw:
        p, listener, client = await _platform(broker, "platform-c")
        try:
            before = gw.registers()
            res = await p.send(NATIVE, signed("c1", "dim_level", 0.1, "n1"), "c1")
            assert res["status"] == "rejected" and "native command channel is off" in res["reason"]
            assert gw.registers() == before
            payload = dcmd(("dim_level", DOUBLE, 0.35))  # the sparkplug channel is still "broker"
            res = await p.send(DCMD, payload, payload_id("spb", DCMD, payload) + "-0")
            assert res["status"] == "ok" and gw.registers()[0] == 35
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await client.__aexit__(None, None, None)
    assert [a["id"] for a in gw.audit()].count("c1") == 1
