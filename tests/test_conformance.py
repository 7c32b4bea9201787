"""Standards conformance of what the gateway publishes, checked on a captured stream.

Every shipped profile runs against its simulator (Modbus TCP, and pty pairs for the ASCII
streetlight, Pelco-D and M-Bus lines) inside the real agent, publishing through the real
Mosquitto in three encodings at once: native JSON, NGSI-LD and the FIWARE IoT Agent measures.
The stream covers good readings, point and device faults (a unit nobody answers for, a lamp
with a failed lamp, fault bits on the ASCII controller), and a device going offline (its
simulator stopped: stale readings and the Device status entity). Then:

- every NGSI-LD entity validates against the official Smart Data Models schema of its type
  (tests/standards/, Draft 2020-12, formats checked), and each model appears;
- no float in any encoding carries more digits than its point's resolution;
- the IoT Agent measures use exactly the attributes `cityedge fiware provision` provisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.config import load_config
from agent.runtime import Agent
from drivers.core.profile import Point
from drivers.core.resolution import point_decimals
from drivers.sim.serial_sims import SerialSims, serve_serial_sims
from drivers.sim.server import SimSpec, SimulatorServer
from tests.conftest import MosquittoFactory
from tests.standards import sdm_errors

GW = "gw-sdm"
CONFIG = """\
[gateway]
id = "{gw}"
state_dir = "{state}"
location = [21.0285, 105.8542]
shutdown_grace = 2.0
watch_config = 0

[metrics]
enabled = false

[[buses]]
id = "tcp"
endpoint = "tcp://127.0.0.1:{port}"
timeout = 0.5
retries = 0
quarantine_max = 1.0

[[buses]]
id = "tcp-fw3"
endpoint = "tcp://127.0.0.1:{port_fw3}"
timeout = 0.3
retries = 0
quarantine_max = 1.0
stale_readings = true  # its stale copies are entities too, and must validate

[[buses]]
id = "ascii"
protocol = "serial"
endpoint = "serial://{ascii}?baudrate=9600"
timeout = 0.3

[[buses]]
id = "pelco"
protocol = "pelco_d"
endpoint = "serial://{pelco}?baudrate=9600"
timeout = 0.3

[[buses]]
id = "mbus"
protocol = "mbus"
endpoint = "serial://{mbus}?baudrate=2400"
timeout = 0.5

[[devices]]
id = "lamp-1"
bus = "tcp"
profile = "cityedge/streetlight"
unit_id = 1
interval = 0.5
location = [21.0301, 105.8520]

[[devices]]
id = "lamp-2"
bus = "tcp"
profile = "cityedge/streetlight"
unit_id = 2
interval = 0.5

[[devices]]
id = "lamp-fw3"
bus = "tcp-fw3"
profile = "cityedge/streetlight_fw3"
unit_id = 1
interval = 0.5

[[devices]]
id = "meter-11"
bus = "tcp"
profile = "cityedge/water_meter"
unit_id = 11
interval = 0.5

[[devices]]
id = "cam-21"
bus = "tcp"
profile = "cityedge/camera"
unit_id = 21
interval = 0.5

[[devices]]
id = "em-31"
bus = "tcp"
profile = "eastron/sdm630"
unit_id = 31
interval = 0.5

[[devices]]
id = "ghost-40"
bus = "tcp"
profile = "cityedge/streetlight"
unit_id = 40
interval = 0.5

[[devices]]
id = "ascii-1"
bus = "ascii"
profile = "cityedge/ascii_streetlight"
unit_id = 1
interval = 0.5

[[devices]]
id = "ascii-2"
bus = "ascii"
profile = "cityedge/ascii_streetlight"
unit_id = 2
interval = 0.5

[[devices]]
id = "ptz-1"
bus = "pelco"
profile = "cityedge/pelco_d_camera"
unit_id = 1
interval = 0.5

[[devices]]
id = "wm-mbus-1"
bus = "mbus"
profile = "cityedge/mbus_water_meter"
unit_id = 1
interval = 1.0

[[outputs]]
type = "mqtt"
id = "native"
brokers = [{{ url = "{broker}" }}]
encoding = "native"
topic_prefix = "ce"
batch_latency = 0.05
health_interval = 0

[[outputs]]
type = "mqtt"
id = "ld"
brokers = [{{ url = "{broker}" }}]
encoding = "ngsild"
apikey = "ld-key"
batch_latency = 0.05
health_interval = 0

[[outputs]]
type = "mqtt"
id = "iota"
brokers = [{{ url = "{broker}" }}]
encoding = "iotagent"
apikey = "iota-key"
batch_latency = 0.05
health_interval = 0
"""
PROFILE_OF = {
    "lamp-1": "cityedge/streetlight",
    "lamp-2": "cityedge/streetlight",
    "lamp-fw3": "cityedge/streetlight_fw3",
    "meter-11": "cityedge/water_meter",
    "cam-21": "cityedge/camera",
    "em-31": "eastron/sdm630",
    "ascii-1": "cityedge/ascii_streetlight",
    "ptz-1": "cityedge/pelco_d_camera",
    "wm-mbus-1": "cityedge/mbus_water_meter",
}


@pytest.fixture
async def serial_sims() -> AsyncIterator[SerialSims]:
    s = await serve_serial_sims({"serial": [1, 2], "pelco_d": [1], "mbus": [1]})
    try:
        yield s
    finally:
        await s.close()


async def _until(cond: Any, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


@pytest.mark.slow
async def test_every_shipped_profile_publishes_valid_standard_payloads(
    mosquitto: MosquittoFactory, serial_sims: SerialSims, tmp_path: Path
) -> None:
    broker = mosquitto()
    sim = SimulatorServer(
        SimSpec(streetlights=(1, 2), water_meters=(11,), cameras=(21,), energy_meters=(31,))
    )
    fw3 = SimulatorServer(
        SimSpec(
            streetlights=(1,),
            water_meters=(),
            cameras=(),
            profiles={"streetlight": "cityedge/streetlight_fw3"},
        )
    )
    await sim.start()
    await fw3.start()
    proxy = SilencingProxy(fw3.port)
    await proxy.start()
    sim.device(2).fail_lamp()  # type: ignore[union-attr]  # Streetlight status defectiveLamp
    serial_sims.responder("serial").lamps[2].status = 0b110  # type: ignore[attr-defined]
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        CONFIG.format(
            gw=GW,
            state=tmp_path / "state",
            port=sim.port,
            port_fw3=proxy.port,
            broker=broker.url,
            ascii=serial_sims.paths["serial"],
            pelco=serial_sims.paths["pelco_d"],
            mbus=serial_sims.paths["mbus"],
        )
    )
    loaded = load_config(cfg)
    got: list[tuple[str, bytes]] = []
    subscribed = asyncio.Event()

    async def capture() -> None:
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.subscribe("#", qos=1)
            subscribed.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                got.append((m.topic.value, m.payload))

    def seen(topic_part: str) -> set[str]:
        return {t for t, _ in got if topic_part in t}

    async with asyncio.TaskGroup() as tg:
        cap = tg.create_task(capture(), name="capture")
        tick = tg.create_task(_tick(sim, fw3), name="sim-tick")
        await asyncio.wait_for(subscribed.wait(), 5)
        agent = Agent(loaded)
        run = tg.create_task(agent.run(), name="agent")
        # good readings of every device, in every encoding
        await _until(
            lambda: all(
                f"/ld-key/{d}/attrs" in seen("/ld-key/") and f"/iota-key/{d}/attrs" in seen("/iota")
                for d in PROFILE_OF
            ),
            20,
            f"every device published: {sorted(seen('/ld-key/'))}",
        )
        # a device stops answering: stale readings, then its Device status entity
        proxy.silence()
        fw3_topic = "/ld-key/lamp-fw3/attrs"
        await _until(
            lambda: (
                any(t == fw3_topic and b'"offline"' in p for t, p in got)
                and any(t == fw3_topic and b'"stale"' in p for t, p in got)
            ),
            20,
            "lamp-fw3 reported offline, its last values stale",
        )
        agent.request_shutdown()
        await asyncio.wait_for(run, 10)
        await asyncio.sleep(0.3)
        cap.cancel()
        tick.cancel()
    await proxy.close()
    await sim.stop()
    await fw3.stop()
    _check_ngsild(got)
    _check_resolution(got, loaded)
    _check_iotagent(got, loaded)


class SilencingProxy:
    """A TCP hop in front of a simulator that forwards both ways until ``silence()``, then
    swallows the requests: the device stops answering while its link stays up (timeouts)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.silent = False
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def silence(self) -> None:
        self.silent = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(4096):
                    if not self.silent:
                        dst.write(data)
                        await dst.drain()

        try:
            await asyncio.gather(pump(reader, up_w), pump(up_r, writer))
        finally:
            up_w.close()
            writer.close()


async def _tick(*sims: SimulatorServer) -> None:
    while True:
        for s in sims:
            with contextlib.suppress(Exception):
                s.tick()
        await asyncio.sleep(0.2)


def _check_ngsild(got: list[tuple[str, bytes]]) -> None:
    entities = [e for t, p in got if t.startswith("/ld-key/") for e in json.loads(p)]
    errors = [err for e in entities for err in sdm_errors(e)]
    types = Counter(e["type"] for e in entities)
    assert errors == [], f"{len(errors)} schema errors over {len(entities)} entities: {errors[:5]}"
    assert set(types) == {
        "Streetlight",
        "WaterConsumptionObserved",
        "TrafficFlowObserved",
        "Device",
        "DeviceMeasurement",
    }, types
    by_id: dict[str, list[dict[str, Any]]] = {}
    for e in entities:
        by_id.setdefault(e["id"], []).append(e)
    # the Modbus SLC-1 status register and the ASCII controller's fault bits, as the enum
    lamp2 = by_id[f"urn:ngsi-ld:Streetlight:{GW}:lamp-2"]
    assert {e["status"]["value"] for e in lamp2} == {"defectiveLamp"}
    ascii2 = by_id[f"urn:ngsi-ld:Streetlight:{GW}:ascii-2"]
    assert {e["status"]["value"] for e in ascii2} == {"brokenLantern"}  # bits 1 and 2 set
    assert ascii2[-1]["cityedge:statusFlags"]["value"] == [
        "driver_overtemperature",
        "supply_fault",
    ]
    # gateway location inherited; a device's own location wins ([lon, lat] in GeoJSON)
    assert ascii2[-1]["location"]["value"]["coordinates"] == [105.8542, 21.0285]
    lamp1 = by_id[f"urn:ngsi-ld:Streetlight:{GW}:lamp-1"]
    assert lamp1[-1]["location"]["value"]["coordinates"] == [105.852, 21.0301]
    # integers where the model says integer: litres and 0/1 alarm flags
    water = by_id[f"urn:ngsi-ld:WaterConsumptionObserved:{GW}:meter-11"][-1]
    assert type(water["waterConsumption"]["value"]) is int
    assert water["waterConsumption"]["unitCode"] == "LTR"
    assert water["alarmTamper"]["value"] in (0, 1) and type(water["alarmTamper"]["value"]) is int
    mbus = by_id[f"urn:ngsi-ld:WaterConsumptionObserved:{GW}:wm-mbus-1"][-1]
    assert type(mbus["waterConsumption"]["value"]) is int
    # the energy meter is a Device; its registers are DeviceMeasurements referring to it
    em = [e for i, es in by_id.items() if f":{GW}:em-31:" in i for e in es]
    assert len({e["id"] for e in em}) == 23  # every point of the SDM630 profile
    assert {e["refDevice"]["object"] for e in em} == {f"urn:ngsi-ld:Device:{GW}:em-31"}
    # offline: the status entity, and the unit nobody answers publishes no entity at all
    states = [e for e in by_id[f"urn:ngsi-ld:Device:{GW}:lamp-fw3"] if "deviceState" in e]
    assert [e["deviceState"]["value"] for e in states] == ["online", "offline"]  # one each
    status = states[-1]
    assert status["controlledProperty"]["value"] == ["light", "power", "energy"]
    stale = [
        e
        for e in by_id[f"urn:ngsi-ld:Streetlight:{GW}:lamp-fw3"]
        if e["status"].get("quality", {}).get("value") == "stale"
    ]
    assert stale, "stale readings of the silent device"
    assert not any(":ghost-40" in i for i in by_id if "Streetlight" in i)


def _points(loaded: Any) -> dict[tuple[str, str], Point]:
    return {
        (d.id, p.name): p for d in loaded.config.devices for p in loaded.profiles[d.profile].points
    }


def _at_resolution(p: Point, v: float) -> bool:
    d = point_decimals(p)
    if d is not None:
        return round(v, d) == v
    if p.type.value == "float32" and p.scale == 1 and p.offset == 0:
        return v == float(f"{v:.9g}") and struct.pack(">f", v) == struct.pack(">f", v)
    return v == float(f"{v:.15g}")


def _check_resolution(got: list[tuple[str, bytes]], loaded: Any) -> None:
    points = _points(loaded)
    floats = 0
    bad: list[str] = []
    for topic, payload in got:
        if not topic.endswith("/data"):
            continue
        for r in json.loads(payload)["readings"]:
            v = r["value"]
            if isinstance(v, float):
                floats += 1
                p = points[(r["device"], r["point"])]
                if not _at_resolution(p, v) or len(repr(v)) > 17:
                    bad.append(f"{r['device']}.{r['point']} = {v!r}")
    assert floats > 100 and bad == [], bad[:10]
    # the same numbers in the NGSI-LD stream: no binary-float tails anywhere
    for topic, payload in got:
        if topic.startswith(("/ld-key/", "/iota-key/")):
            text = payload.decode()
            assert "0000000000" not in text and "9999999999" not in text, text[:300]


def _check_iotagent(got: list[tuple[str, bytes]], loaded: Any) -> None:
    from agent.forward.fiware.provision import provisioning

    (out,) = [o for o in loaded.config.outputs if o.id == "iota"]
    body = provisioning(loaded, out)
    provisioned = {
        d["device_id"]: {a["object_id"] for a in d["attributes"]}
        for d in body["devices"]["devices"]
    }
    measures = 0
    for topic, payload in got:
        if not topic.startswith("/iota-key/") or not topic.endswith("/attrs"):
            continue
        device = topic.split("/")[2]
        msg = json.loads(payload)
        for m in msg if isinstance(msg, list) else [msg]:
            measures += 1
            unknown = set(m) - provisioned[device] - {"TimeInstant"}
            assert not unknown, (device, unknown)
    assert measures > 20
