"""FIWARE IoT Agent path: provisioning bodies against iotagent-node-lib's own JSON schemas,
`cityedge fiware provision` printing and posting them, the `iotagent` measures, and command
answers that show a refused command as ERROR (through the real Mosquitto and simulator)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.cli.main import main
from agent.config import load_config
from agent.config.outputs import MqttOutput
from agent.forward.encoders.iotagent import IotAgentEncoder
from agent.forward.fiware.provision import provisioning
from agent.runtime import bindings_for
from drivers.core.reading import Quality, Reading
from drivers.sim.server import SimulatorServer
from tests.agent.control.test_commands_mqtt import run_agent, sim  # noqa: F401
from tests.standards import iota_errors

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gateway.toml"
T0 = 1_795_000_000_000


def example_config(tmp_path: Path) -> Path:
    """examples/gateway.toml with its output switched to the IoT Agent encoding."""
    text = EXAMPLE.read_text().replace('encoding = "native"', 'encoding = "iotagent"', 1)
    text = text.replace('state_dir = "/var/lib/cityedge"', f'state_dir = "{tmp_path}"')
    text = text.replace('profile_dirs = ["profiles"]', "profile_dirs = []")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(text)
    (tmp_path / "secrets").mkdir()
    return cfg


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CITYEDGE_SECRETS__MQTT_PASSWORD", "x")
    return example_config(tmp_path)


def test_example_provisioning_validates_against_iotagent_node_lib(example: Path) -> None:
    loaded = load_config(example)
    (out,) = [o for o in loaded.config.outputs if isinstance(o, MqttOutput)]
    body = provisioning(loaded, out)
    assert iota_errors("deviceGroup", body["services"]) == []
    assert iota_errors("createDevice", body["devices"]) == []
    (group,) = body["services"]["services"]
    assert group["apikey"] == "hn-cabinet-0042" and group["timestamp"] is True
    devices = {d["device_id"]: d for d in body["devices"]["devices"]}
    assert {d: v["entity_type"] for d, v in devices.items()} == {
        "lamp-01": "Streetlight",
        "lamp-02": "Streetlight",
        "meter-01": "WaterConsumptionObserved",
        "cam-01": "TrafficFlowObserved",
    }
    lamp = devices["lamp-01"]
    assert lamp["entity_name"] == "urn:ngsi-ld:Streetlight:hn-cabinet-0042:lamp-01"
    attrs = {a["object_id"]: a for a in lamp["attributes"]}
    assert attrs["status"] == {"object_id": "status", "name": "status", "type": "Text"}
    assert (
        attrs["dim_level"]["name"] == "illuminanceLevel" and attrs["dim_level"]["type"] == "Number"
    )
    assert attrs["energy"]["entity_type"] == "DeviceMeasurement"
    assert attrs["energy"]["name"] == "numValue"
    (loc,) = [s for s in lamp["static_attributes"] if s["name"] == "location"]
    assert loc == {
        "name": "location",
        "type": "geo:json",
        "value": {"type": "Point", "coordinates": [105.8412, 21.0245]},
    }
    assert {"name": "dim_level", "type": "command"} in lamp["commands"]
    meter = {a["object_id"]: a for a in devices["meter-01"]["attributes"]}
    assert meter["volume"] == {"object_id": "volume", "name": "waterConsumption", "type": "Integer"}
    assert meter["tamper"]["type"] == "Integer"  # 0/1 flags
    # the schemas do refuse what the IoT Agent would refuse
    bad = {"devices": [{"device_id": "x", "attributes": [{"object_id": "a", "bogus": 1}]}]}
    assert iota_errors("createDevice", bad)
    assert iota_errors("deviceGroup", {"services": [{"resource": "/iot/json"}]})


def test_provision_prints_the_bodies(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fiware", "provision", str(example), "--service", "hanoi"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["headers"] == {"fiware-service": "hanoi", "fiware-servicepath": "/"}
    assert iota_errors("deviceGroup", doc["POST /iot/services"]) == []
    assert iota_errors("createDevice", doc["POST /iot/devices"]) == []
    assert main(["fiware", "provision", str(example), "--output", "nope"]) == 2


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str], Any]] = []
    status = 201

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        headers = {k.lower(): v for k, v in self.headers.items()}
        type(self).seen.append((self.path, headers, body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def north_port() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Rec", (_Recorder,), {"seen": [], "status": 201})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    t.join()


def test_provision_posts_to_the_north_port(
    example: Path, north_port: tuple[str, type[_Recorder]]
) -> None:
    url, rec = north_port
    args = ["fiware", "provision", str(example), "--iota", url, "--subservice", "/lights"]
    assert main(args) == 0
    assert [p for p, _, _ in rec.seen] == ["/iot/services", "/iot/devices"]
    for path, headers, body in rec.seen:
        assert headers["fiware-service"] == "openiot"
        assert headers["fiware-servicepath"] == "/lights"
        assert headers["content-type"] == "application/json"
        template = "deviceGroup" if path == "/iot/services" else "createDevice"
        assert iota_errors(template, body) == []
    rec.status = 400
    assert main(args) == 1


def _reading(dev: str, point: str, value: Any, ms: int = T0, **kw: Any) -> Reading:
    return Reading("hn-cabinet-0042", dev, "", point, point, value, None, None, ms, seq=1, **kw)


def test_measures_carry_model_types_and_time(example: Path) -> None:
    loaded = load_config(example)
    (out,) = [o for o in loaded.config.outputs if isinstance(o, MqttOutput)]
    enc = IotAgentEncoder(out, "hn-cabinet-0042", bindings_for(loaded), Path("/nonexistent"))
    msgs = enc.encode(
        [
            _reading("meter-01", "volume", 535387),
            _reading("meter-01", "tamper", True),
            _reading("meter-01", "alarm_flags", ("leak", "tamper")),
            _reading("meter-01", "flow_rate", None, quality=Quality.BAD),
            _reading("lamp-01", "dim_level", 1.4),  # outside illuminanceLevel 0..1: left out
            _reading("lamp-01", "status", "ok"),
            _reading("lamp-01", "status", "defectiveLamp", T0 + 500),  # a second time
        ]
    )
    assert [m.topic for m in msgs] == [
        "/hn-cabinet-0042/meter-01/attrs",
        "/hn-cabinet-0042/lamp-01/attrs",
    ]
    assert json.loads(msgs[0].payload) == {
        "TimeInstant": "2026-11-18T11:06:40.000Z",
        "volume": 535387,
        "tamper": 1,
        "alarm_flags": "leak,tamper",
    }
    assert json.loads(msgs[1].payload) == [
        {"TimeInstant": "2026-11-18T11:06:40.000Z", "status": "ok"},
        {"TimeInstant": "2026-11-18T11:06:40.500Z", "status": "defectiveLamp"},
    ]
    assert enc.left_out == 1


async def test_command_answers_show_refusals_in_the_context_broker(
    sim: SimulatorServer,  # noqa: F811
    mosquitto: Any,
    tmp_path: Path,
) -> None:
    broker = mosquitto()
    agent, task = await run_agent(tmp_path, sim, broker, encoding="iotagent")
    got: list[tuple[str, Any]] = []
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="iot-agent") as client:
            for t in ("/gw-cmd/lamp-1/cmdexe", "/gw-cmd/lamp-1/attrs", "cityedge/gw-cmd/+/cmd/res"):
                await client.subscribe(t, qos=1)

            async def listen() -> None:
                async for m in client.messages:
                    got.append((m.topic.value, json.loads(m.payload)))

            listener = asyncio.create_task(listen())
            await asyncio.sleep(0.3)

            def answers() -> list[tuple[str, Any]]:
                return [(t, b) for t, b in got if isinstance(b, dict) and "TimeInstant" not in b]

            async def send(payload: bytes, n: int) -> tuple[str, Any]:
                await client.publish("/gw-cmd/lamp-1/cmd", payload, qos=1)
                async with asyncio.timeout(10):
                    while len(answers()) < n:
                        await asyncio.sleep(0.02)
                return answers()[n - 1]

            # carried out: cmdexe, which the IoT Agent turns into dim_level_status OK
            topic, body = await send(b'{"dim_level": 0.55}', 1)
            assert topic == "/gw-cmd/lamp-1/cmdexe" and body["dim_level"]["status"] == "ok"
            assert sim.registers(1, "holding", 0, 1) == [55]
            # refused (above the maximum): no cmdexe, an ERROR status measure
            topic, body = await send(b'{"dim_level": 7}', 2)
            assert topic == "/gw-cmd/lamp-1/attrs"
            assert body["dim_level_status"] == "ERROR"
            assert body["dim_level_info"]["status"] == "rejected"
            assert sim.registers(1, "holding", 0, 1) == [55]
            # two commands in one message: each named command shows the refusal
            topic, body = await send(b'{"dim_level": 1, "lamp_switch": "on"}', 3)
            assert topic == "/gw-cmd/lamp-1/attrs" and body["dim_level_status"] == "ERROR"
            topic, body = await send(b"", 5)
            # unparseable: no command name to answer under, so the native response topic
            assert topic == "cityedge/gw-cmd/lamp-1/cmd/res" and body["status"] == "rejected"
            assert not any("error" in b for _, b in got if isinstance(b, dict))
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)


def test_the_documented_provisioning_is_current(
    example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/fiware-provisioning.json (docs/PAYLOADS.md) is exactly what the command prints
    for examples/gateway.toml."""
    cfg = EXAMPLE.parent / "gateway.toml"
    args = ["fiware", "provision", str(cfg), "--output", "city-platform"]
    assert main([*args, "--service", "hanoi", "--subservice", "/cabinet-0042"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((EXAMPLE.parent / "fiware-provisioning.json").read_text())


async def test_a_device_transition_is_one_device_state_measure(
    sim: SimulatorServer,  # noqa: F811
    mosquitto: Any,
    tmp_path: Path,
) -> None:
    """The IoT Agent path sees online / offline too: each transition is one measure of the
    provisioned Device entity's deviceState (and reason), through the real Mosquitto."""
    broker = mosquitto()
    agent, task = await run_agent(tmp_path, sim, broker, encoding="iotagent")
    states: list[dict[str, Any]] = []
    readings = 0
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="iot-agent") as client:
            await client.subscribe("/gw-cmd/lamp-1/attrs", qos=1)

            async def listen() -> None:
                nonlocal readings
                async for m in client.messages:
                    body = json.loads(m.payload)
                    for measure in body if isinstance(body, list) else [body]:
                        if "_deviceState" in measure:
                            states.append(measure)
                        else:
                            readings += 1

            listener = asyncio.create_task(listen())
            async with asyncio.timeout(10):
                while readings < 5:  # the device answers, polled every 0.3 s
                    await asyncio.sleep(0.02)
            assert [s["_deviceState"] for s in states] == ["online"]  # once, not per poll
            assert states[0]["_deviceStateReason"] == "" and "TimeInstant" in states[0]
            await sim.stop()  # the device's gateway goes away
            async with asyncio.timeout(10):
                while len(states) < 2:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)  # offline: no measure per tick (failed probes included)
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
    assert [s["_deviceState"] for s in states] == ["online", "offline"]
    assert states[1]["_deviceStateReason"] in ("reset", "refused")
    loaded = load_config(tmp_path / "gateway.toml")
    (out,) = [o for o in loaded.config.outputs if isinstance(o, MqttOutput)]
    (device,) = provisioning(loaded, out)["devices"]["devices"]
    provisioned = {a["object_id"]: a for a in device["attributes"]}
    assert {k for s in states for k in s} - {"TimeInstant"} <= set(provisioned)
    assert provisioned["_deviceState"]["name"] == "deviceState"
    assert provisioned["_deviceState"]["entity_type"] == "Device"
