"""NGSI-LD encoder: normalized entity shape, Smart Data Model types and attribute names (checked
against the allow-lists in agent/forward/encoders/sdm.py), units, observedAt, location, stable
message ids, replay snapshots, IoT Agent topics."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiomqtt

from agent.config.outputs import MqttOutput
from agent.forward.encoders import sdm
from agent.forward.encoders.base import OutMessage
from agent.forward.encoders.ngsild import NgsiLdEncoder
from agent.forward.sinks.mqtt import MqttSink
from drivers.base import DeviceBinding
from drivers.core.config import DeviceConfig
from drivers.core.profile import Point, Profile
from drivers.core.reading import Quality, Reading
from drivers.device_state import Reason, State, Transition
from tests.conftest import MosquittoFactory
from tests.standards import sdm_errors

GW = "gw1"
T0 = 1_700_000_000_123
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def profile(kind: str, *names: str, **typed: dict[str, Any]) -> Profile:
    points = [Point(name=n, address=i) for i, n in enumerate(names)]
    points += [Point(name=n, address=100 + i, **kw) for i, (n, kw) in enumerate(typed.items())]
    return Profile(id=kind, kind=kind, points=tuple(points))


BINDINGS = [
    DeviceBinding(
        GW,
        DeviceConfig(
            id="lamp1",
            bus="b",
            profile="streetlight",
            entity_id="urn:ngsi-ld:Streetlight:hanoi:L-0042",
            location=(21.0285, 105.8542),
        ),
        profile(
            "streetlight",
            "dim",
            power={"type": "float32"},
            volts={"scale": 0.1},
            state={"enum": {0: "off", 1: "on"}},
            status={"enum": {0: "ok", 1: "defectiveLamp"}},
        ),
    ),
    DeviceBinding(
        GW,
        DeviceConfig(id="wm1", bus="b", profile="water_meter"),
        profile("water_meter", "volume", flow={"type": "float32"}),
    ),
    DeviceBinding(
        GW,
        DeviceConfig(id="cam1", bus="b", profile="camera"),
        profile("camera", "count", pan={"scale": 0.1}),
    ),
    DeviceBinding(
        GW,
        DeviceConfig(id="em1", bus="b", profile="energy_meter"),
        profile("energy_meter", kwh={"type": "float32"}, rssi={"type": "int16"}),
    ),
]
KINDS = {"lamp1": "streetlight", "wm1": "water_meter", "cam1": "camera", "em1": "energy_meter"}


def make(**kw: Any) -> NgsiLdEncoder:
    out = MqttOutput(
        type="mqtt", id="ld", brokers=({"url": "mqtt://127.0.0.1:1883"},), encoding="ngsild", **kw
    )
    return NgsiLdEncoder(out, GW, BINDINGS, Path("/nonexistent"), clock=lambda: T0)


def rd(
    dev: str,
    point: str,
    metric: str,
    value: Any,
    seq: int,
    ms: int = T0,
    unit: str | None = None,
    code: str | None = None,
    **kw: Any,
) -> Reading:
    return Reading(GW, dev, KINDS[dev], point, metric, value, unit, code, ms, seq=seq, **kw)


def entities(msg: OutMessage) -> list[dict[str, Any]]:
    body = json.loads(msg.payload)
    assert isinstance(body, list) and body
    for e in body:
        check_normalized(e)
        assert sdm_errors(e) == []  # the official schema of its type
    return body


def check_normalized(e: dict[str, Any]) -> None:
    """NGSI-LD normalized form + Smart Data Model attribute names (independent of the encoder
    except for the allow-lists, which are the reference data under test)."""
    assert e["id"].startswith(f"urn:ngsi-ld:{e['type']}:") or e["type"] == "Streetlight"
    model = sdm.MODELS[e["type"]]
    assert e["@context"][-1] == sdm.CORE_CONTEXT
    assert e["@context"][0].startswith("https://raw.githubusercontent.com/smart-data-models/")
    for name, attr in e.items():
        if name in ("id", "type", "@context"):
            continue
        assert model.allows(name) or sdm.is_extension(name), f"{e['type']}.{name} not in model"
        assert attr["type"] in ("Property", "GeoProperty", "Relationship"), name
        if attr["type"] == "Relationship":
            assert attr["object"].startswith("urn:ngsi-ld:")
        else:
            assert "value" in attr and attr["value"] is not None
        if "observedAt" in attr:
            assert ISO_Z.match(attr["observedAt"]), attr
        if "unitCode" in attr:
            assert re.fullmatch(r"[A-Z0-9]{2,3}", attr["unitCode"])


def by_type(msg: OutMessage) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in entities(msg):
        out.setdefault(e["type"], []).append(e)
    return out


def test_streetlight_entity_with_location_units_and_measurements() -> None:
    batch = [
        rd("lamp1", "power", "powerConsumption", 41.5, 7, unit="W", code="WTT"),
        rd("lamp1", "volts", "voltage", 229.8, 8, unit="V"),
        rd("lamp1", "dim", "dimmingLevel", 80, 9, unit="%"),
        rd("lamp1", "state", "powerState", "on", 10),
        rd("lamp1", "status", "status", "ok", 11),
    ]
    (msg,) = make().encode(batch)
    assert msg.topic == "/gw1/lamp1/attrs" and msg.qos == 1 and not msg.retain
    types = by_type(msg)
    (light,) = types["Streetlight"]
    assert light["id"] == "urn:ngsi-ld:Streetlight:hanoi:L-0042"
    assert light["location"] == {
        "type": "GeoProperty",
        "value": {"type": "Point", "coordinates": [105.8542, 21.0285]},
    }
    assert light["powerConsumption"] == {
        "type": "Property",
        "value": 41.5,
        "observedAt": "2023-11-14T22:13:20.123Z",
        "unitCode": "WTT",
    }
    assert light["voltage"]["unitCode"] == "VLT"  # derived from the UCUM unit
    assert light["powerState"]["value"] == "on" and "unitCode" not in light["powerState"]
    assert light[sdm.MSG_ID]["value"] == "urn:cityedge:gw1:lamp1:7-11"
    assert light["status"]["value"] == "ok"
    # "dimmingLevel" is no Streetlight attribute: a DeviceMeasurement referring to the device
    (m,) = types["DeviceMeasurement"]
    assert m["id"] == "urn:ngsi-ld:DeviceMeasurement:gw1:lamp1:dim"
    assert m["numValue"]["value"] == 80 and m["numValue"]["unitCode"] == "P1"
    assert m["controlledProperty"]["value"] == "dimmingLevel"
    assert m["refDevice"] == {"type": "Relationship", "object": "urn:ngsi-ld:Device:gw1:lamp1"}
    assert m["unit"]["value"] == "P1"
    assert m["dateObserved"]["value"] == {"@type": "DateTime", "@value": "2023-11-14T22:13:20.123Z"}
    assert m[sdm.MSG_ID] == light[sdm.MSG_ID]


def test_water_meter_traffic_camera_and_energy_meter_models() -> None:
    enc = make(apikey="k3y")
    wm, cam, em = enc.encode(
        [
            rd("wm1", "volume", "waterConsumption", 1234, 1, unit="m3"),
            rd("wm1", "flow", "flowRate", 0.4, 2, unit="m3/h"),
            rd("cam1", "count", "intensity", 17, 3, unit="1/h"),
            rd("cam1", "pan", "pan", 120.5, 4, unit="deg"),
            rd("em1", "kwh", "activeEnergyImport", 5000.25, 5, unit="kWh"),
            rd("em1", "rssi", "rssi", -71, 6),
        ]
    )
    assert [m.topic for m in (wm, cam, em)] == [
        "/k3y/wm1/attrs",
        "/k3y/cam1/attrs",
        "/k3y/em1/attrs",
    ]
    w = by_type(wm)
    (water,) = w["WaterConsumptionObserved"]
    assert water["id"] == "urn:ngsi-ld:WaterConsumptionObserved:gw1:wm1"
    assert water["waterConsumption"]["unitCode"] == "MTQ"
    assert w["DeviceMeasurement"][0]["numValue"]["unitCode"] == "MQH"
    c = by_type(cam)
    (traffic,) = c["TrafficFlowObserved"]
    assert traffic["intensity"]["value"] == 17
    assert traffic["dateObserved"]["value"]["@value"] == "2023-11-14T22:13:20.123Z"  # required
    assert c["DeviceMeasurement"][0]["controlledProperty"]["value"] == "pan"
    assert c["DeviceMeasurement"][0]["numValue"]["unitCode"] == "DD"
    e = by_type(em)
    assert e["Device"][0]["id"] == "urn:ngsi-ld:Device:gw1:em1"
    assert e["Device"][0]["rssi"]["value"] == -71
    assert e["DeviceMeasurement"][0]["refDevice"]["object"] == "urn:ngsi-ld:Device:gw1:em1"
    assert e["DeviceMeasurement"][0]["numValue"]["unitCode"] == "KWH"


def test_replay_keeps_observed_at_and_splits_repeated_attributes() -> None:
    old = T0 - 86_400_000
    batch = [
        rd("wm1", "volume", "waterConsumption", 10, 1, old, historical=True),
        rd("wm1", "flow", "flowRate", 0.1, 2, old, historical=True),
        rd("wm1", "volume", "waterConsumption", 11, 3, old + 60_000, historical=True),
        rd("wm1", "volume", "waterConsumption", 12, 4, T0),
    ]
    msgs = make().encode(batch)
    got = [
        (
            e["waterConsumption"]["value"],
            e["waterConsumption"]["observedAt"],
            e[sdm.MSG_ID]["value"],
        )
        for m in msgs
        for e in entities(m)
        if e["type"] == "WaterConsumptionObserved"
    ]
    assert got == [
        (10, "2023-11-13T22:13:20.123Z", "urn:cityedge:gw1:wm1:1-2"),
        (11, "2023-11-13T22:14:20.123Z", "urn:cityedge:gw1:wm1:3-3"),
        (12, "2023-11-14T22:13:20.123Z", "urn:cityedge:gw1:wm1:4-4"),
    ]


def test_redelivery_is_byte_identical() -> None:
    batch = [
        rd("lamp1", "power", "powerConsumption", 40.0, 11),
        rd("cam1", "count", "intensity", 3, 12),
    ]
    assert make().encode(batch) == make().encode(batch)


def test_quality_bad_skipped_stale_marked() -> None:
    (msg,) = make().encode(
        [
            rd(
                "lamp1", "power", "powerConsumption", None, 1, quality=Quality.BAD, reason="timeout"
            ),
            rd("lamp1", "volts", "voltage", 300.0, 2, quality=Quality.BAD, reason="out_of_range"),
            rd("lamp1", "state", "powerState", "off", 3, quality=Quality.STALE),
            rd("lamp1", "status", "status", "ok", 4, quality=Quality.STALE),
        ]
    )
    (light,) = entities(msg)
    assert "powerConsumption" not in light and "voltage" not in light
    assert light["powerState"]["quality"] == {"type": "Property", "value": "stale"}
    assert light[sdm.MSG_ID]["value"] == "urn:cityedge:gw1:lamp1:1-4"
    # nothing publishable: no message at all (an empty entity array helps nobody)
    assert make().encode([rd("wm1", "flow", "flowRate", None, 4, quality=Quality.BAD)]) == []


def test_streetlight_status_is_carried_and_required() -> None:
    enc = make()
    # no status read yet: a Streetlight without its required status would be invalid, so its
    # readings go out as DeviceMeasurements until one is known
    (first,) = enc.encode([rd("lamp1", "power", "powerConsumption", 40.0, 1)])
    (m,) = entities(first)
    assert m["type"] == "DeviceMeasurement" and "outlier" not in m
    enc.encode([rd("lamp1", "status", "status", "defectiveLamp", 2, T0 + 1000)])
    (later,) = enc.encode([rd("lamp1", "power", "powerConsumption", 41.0, 3, T0 + 2000)])
    (light,) = entities(later)
    assert light["powerConsumption"]["value"] == 41.0
    # the last known status, with the time it was observed
    assert light["status"] == {
        "type": "Property",
        "value": "defectiveLamp",
        "observedAt": "2023-11-14T22:13:21.123Z",
    }


def test_values_take_the_model_types() -> None:
    enc = make()
    # a value outside the model attribute's range goes to its DeviceMeasurement, flagged
    (msg,) = enc.encode(
        [
            rd("lamp1", "status", "status", "ok", 1),
            rd("lamp1", "volts", "voltage", 231.5, 2),
        ]
    )
    assert {e["type"] for e in entities(msg)} == {"Streetlight"}
    (cam,) = enc.encode([rd("cam1", "pan", "occupancy", 1.5, 4)])
    (m,) = entities(cam)
    assert m["type"] == "DeviceMeasurement" and m["outlier"]["value"] is True
    (cam,) = enc.encode([rd("cam1", "pan", "occupancy", 0.5, 5)])
    (t,) = entities(cam)
    assert t["type"] == "TrafficFlowObserved" and t["occupancy"]["value"] == 0.5


def test_device_status_and_protocol_methods() -> None:
    enc = make()
    (msg,) = enc.device_status("lamp1", False)
    (dev,) = entities(msg)
    assert dev["type"] == "Device" and dev["id"] == "urn:ngsi-ld:Device:gw1:lamp1"
    assert dev["deviceState"]["value"] == "offline" and "location" in dev
    assert dev["controlledProperty"]["value"] == ["light", "power"]  # the kind's default
    t = Transition("lamp1", "b", State.OFFLINE, State.ONLINE, Reason.BAD_FRAMES, "x", T0)
    (msg,) = enc.device_status("lamp1", False, t)
    (dev,) = entities(msg)
    assert dev["deviceState"] == {
        "type": "Property",
        "value": "offline",
        "observedAt": "2023-11-14T22:13:20.123Z",  # when it happened
        "reason": {"type": "Property", "value": "bad frames"},
    }
    assert enc.will() is None and enc.on_connect() == []
    assert enc.subscriptions() == ["/gw1/+/cmd"]
    assert enc.on_message("/gw1/lamp1/cmd", b"{}") == []


def test_every_model_allows_only_its_schema() -> None:
    assert sdm.model_for_kind("streetlight") is sdm.STREETLIGHT
    assert sdm.model_for_kind("energy_meter") is sdm.DEVICE
    assert not sdm.STREETLIGHT.allows("dimmingLevel")
    assert sdm.WATER_CONSUMPTION.allows("waterConsumption")
    assert sdm.TRAFFIC_FLOW.allows("intensity") and sdm.TRAFFIC_FLOW.allows("location")
    assert sdm.unit_code("m3", None) == "MTQ" and sdm.unit_code("m3", "LTR") == "LTR"
    assert sdm.unit_code("furlong", None) is None


async def test_end_to_end_with_mqtt_sink(mosquitto: MosquittoFactory, tmp_path: Path) -> None:
    broker = mosquitto()
    got: list[tuple[str, list[dict[str, Any]]]] = []
    subscribed = asyncio.Event()

    async def collect() -> None:
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.subscribe("/gw1/+/attrs", qos=1)
            subscribed.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                got.append((m.topic.value, json.loads(m.payload)))

    out = MqttOutput.model_validate(
        {
            "type": "mqtt",
            "id": "ld",
            "brokers": [{"url": broker.url}],
            "encoding": "ngsild",
            "batch_latency": 0.02,
            "commit_interval": 0.01,
            "health_interval": 0,
        }
    )
    sink = MqttSink("ld", out, GW, BINDINGS, tmp_path)
    async with asyncio.TaskGroup() as tg:
        col = tg.create_task(collect(), name="test-collect")
        await asyncio.wait_for(subscribed.wait(), 5)
        run = tg.create_task(sink.run(), name="test-sink")
        await sink.submit([rd("lamp1", "power", "powerConsumption", 40.5, 1, unit="W")])
        await sink.submit([rd("wm1", "volume", "waterConsumption", 9, 2, unit="m3")])
        async with asyncio.timeout(10):
            while len(got) < 2:
                await asyncio.sleep(0.02)
        await sink.close()
        run.cancel()
        col.cancel()
    assert [t for t, _ in got] == ["/gw1/lamp1/attrs", "/gw1/wm1/attrs"]
    for _, body in got:
        for e in body:
            check_normalized(e)
    assert got[1][1][0]["waterConsumption"]["value"] == 9
