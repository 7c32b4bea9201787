"""GET /metrics and GET /health from a real agent polling the Modbus simulator on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import load_config
from agent.ops.ops import Operations, attach_operations
from agent.ops.timesync import TimeKeeper
from agent.runtime import Agent
from drivers.sim.server import SimSpec, SimulatorServer

CONFIG = """\
[gateway]
id = "gw-ops"
state_dir = "{state}"

[metrics]
port = 0

[[buses]]
id = "sim"
endpoint = "tcp://127.0.0.1:{port}"
timeout = 0.5

[[devices]]
id = "lamp-1"
bus = "sim"
profile = "cityedge/streetlight"
unit_id = 1
interval = 0.1

[[devices]]
id = "meter-1"
bus = "sim"
profile = "cityedge/water_meter"
unit_id = 11
interval = 0.1

[[outputs]]
type = "jsonl"
id = "file"
path = "{state}/out.jsonl"
"""


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(ln.split(": ", 1) for ln in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Agent, Operations]]:
    sim = SimulatorServer(SimSpec(streetlights=(1,), water_meters=(11,), cameras=()))
    await sim.start()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(state=tmp_path, port=sim.port))
    agent = Agent(load_config(cfg))
    keeper = TimeKeeper(kernel_probe=lambda: None, marker_probe=lambda: None)
    ops = attach_operations(agent, timekeeper=keeper, watchdog_interval=0.05, notify=lambda s: True)
    assert [n for n, _ in agent.services][-3:] == ["timesync", "watchdog", "http"]
    task = asyncio.create_task(agent.run(), name="agent")
    try:
        assert ops.http is not None
        await asyncio.wait_for(ops.http.listening.wait(), 5)
        for _ in range(100):  # both devices polled a few times
            devs = agent.drivers["sim"].stats.devices.values()
            if all(d.polls >= 3 for d in devs):
                break
            await asyncio.sleep(0.05)
        yield agent, ops
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
        await sim.stop()


FAMILIES = {
    # per device
    "cityedge_device_poll_latency_seconds": "gauge",
    "cityedge_device_polls": "counter",
    "cityedge_device_timeouts": "counter",
    "cityedge_device_exceptions": "counter",
    "cityedge_device_online": "gauge",
    "cityedge_device_last_success_age_seconds": "gauge",
    # per bus
    "cityedge_bus_busy_seconds": "counter",
    "cityedge_bus_utilization_ratio": "gauge",
    "cityedge_bus_requests": "counter",
    "cityedge_bus_reconnects": "counter",
    "cityedge_bus_connected": "gauge",
    # outputs / outbox
    "cityedge_outbox_depth": "gauge",
    "cityedge_outbox_oldest_age_seconds": "gauge",
    "cityedge_outbox_dropped": "counter",
    "cityedge_published_messages": "counter",
    "cityedge_published_readings": "counter",
    # pipeline, agent, clock
    "cityedge_readings_received": "counter",
    "cityedge_filter_suppression_ratio": "gauge",
    "cityedge_ready": "gauge",
    "cityedge_build_info": "gauge",  # an info family is a gauge in text format 0.0.4
    "cityedge_time_synchronized": "gauge",
    # process
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
}


async def test_metrics_scrape(running: tuple[Agent, Operations]) -> None:
    _agent, ops = running
    assert ops.http is not None
    status, headers, body = await get(ops.http.port, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    missing = {n for n in FAMILIES if n not in fams}
    assert not missing
    for name, kind in FAMILIES.items():
        assert fams[name].type == kind, name

    def value(name: str, **labels: str) -> float:
        for s in fams[name].samples:
            if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith(
                "_created"
            ):
                return float(s.value)
        raise AssertionError(f"no sample {name} {labels}")

    assert value("cityedge_device_polls", bus="sim", device="lamp-1") >= 3
    assert value("cityedge_device_online", device="meter-1") == 1
    assert 0 < value("cityedge_device_poll_latency_seconds", device="lamp-1") < 1
    assert value("cityedge_device_last_success_age_seconds", device="lamp-1") < 5
    assert value("cityedge_bus_connected", bus="sim") == 1
    assert value("cityedge_bus_requests", bus="sim") >= 6
    assert 0 < value("cityedge_bus_utilization_ratio", bus="sim") <= 1
    assert value("cityedge_readings_received") > 0
    assert value("cityedge_published_readings", output="file") > 0  # JsonLinesSink.written
    # agent/ops/procstat.py: sources that qemu-user fills too (tests/agent/ops/test_procstat.py)
    assert value("process_resident_memory_bytes") > 10e6
    assert value("process_cpu_seconds") > 0
    assert value("cityedge_ready") == 1


async def test_health_document(running: tuple[Agent, Operations]) -> None:
    _agent, ops = running
    assert ops.http is not None
    ops.note_reload(False, "devices[1].unit_id: Input should be less than or equal to 255")
    status, headers, body = await get(ops.http.port, "/health")
    assert status == 200 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert doc["status"] == "degraded"
    assert any("reload refused" in r for r in doc["reasons"])
    assert doc["gateway"] == "gw-ops" and doc["ready"] is True
    assert doc["devices"]["lamp-1"]["status"] == "online"
    assert doc["devices"]["meter-1"]["bus"] == "sim"
    assert doc["devices"]["meter-1"]["last_success"].endswith("Z")
    assert doc["buses"]["sim"]["connected"] is True
    assert doc["outputs"]["file"]["type"] == "JsonLinesSink"
    assert doc["reload"]["last"]["ok"] is False
    assert doc["clock"]["synchronized"] is True and doc["clock"]["source"] == "heuristic"
    ops.note_reload(True, "applied: no change")
    _, _, body = await get(ops.http.port, "/health")
    assert json.loads(body)["status"] == "ok"


async def test_other_paths_and_methods(running: tuple[Agent, Operations]) -> None:
    _, ops = running
    assert ops.http is not None
    assert (await get(ops.http.port, "/"))[0] == 404
    assert (await get(ops.http.port, "/metrics/../etc/passwd"))[0] == 404
    assert (await get(ops.http.port, "/health", "POST"))[0] == 405
    status, headers, body = await get(ops.http.port, "/health", "HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    # a garbage request line gets a 400, not a crash
    reader, writer = await asyncio.open_connection("127.0.0.1", ops.http.port)
    writer.write(b"hello\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 400")
    writer.close()
