"""Metrics, health and the watchdog read the real MqttSink's stats (Mosquitto on loopback)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agent.config.outputs import MqttOutput
from agent.forward.sinks.mqtt import MqttSink
from agent.ops.health import HealthReport
from agent.ops.metrics import make_registry, render
from agent.ops.watchdog import ProgressWatchdog
from drivers.core.reading import Reading, now_ms
from tests.agent.ops.fakes import FakeAgent
from tests.conftest import MosquittoFactory


def readings(n: int, start: int = 0) -> list[Reading]:
    t = now_ms()
    return [
        Reading("gw", "lamp-1", "streetlight", "p", "power", float(i), "W", "WTT", t, seq=i)
        for i in range(start, start + n)
    ]


async def wait_for(cond, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def samples(agent: FakeAgent) -> dict[str, float]:
    text = render(make_registry(agent)).decode()
    return {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("output") == "up"
    }


async def test_sink_stats_reach_metrics_health_and_watchdog(
    tmp_path: Path, mosquitto: MosquittoFactory
) -> None:
    broker = mosquitto()
    out = MqttOutput.model_validate(
        {
            "type": "mqtt",
            "id": "up",
            "brokers": [{"url": broker.url}],
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
            "batch_latency": 0.02,
            "commit_interval": 0.01,
            "health_interval": 0,
            "connect_timeout": 1,
        }
    )
    sink = MqttSink("up", out, "gw", [], tmp_path)
    agent = FakeAgent({"tcp": {"lamp-1": 1.0}})
    agent.sinks.append(sink)
    task = asyncio.create_task(sink.run(), name="sink:up")
    try:
        await sink.submit(readings(10))
        await wait_for(lambda: sink.stats().readings == 10)
        snap = sink.stats()
        assert snap.connected is True and snap.broker and str(broker.port) in snap.broker
        assert snap.outbox_depth == 0 and snap.outbox_dropped == 0 and (snap.messages or 0) >= 1
        m = samples(agent)
        assert m["cityedge_output_connected"] == 1
        assert m["cityedge_published_readings_total"] == 10
        assert m["cityedge_outbox_depth"] == 0
        assert HealthReport(agent).document()["outputs"]["up"]["connected"] is True

        broker.stop()  # outage: the outbox buffers, health degrades, the watchdog keeps feeding
        await wait_for(lambda: sink.stats().connected is False)
        await sink.submit(readings(5, start=10))
        await wait_for(lambda: sink.stats().outbox_depth == 5)
        doc = HealthReport(agent).document()
        assert doc["status"] == "degraded"
        assert "output up: link down, buffering" in doc["reasons"]
        assert doc["outputs"]["up"]["outbox"]["depth"] == 5
        m = samples(agent)
        assert m["cityedge_output_connected"] == 0 and m["cityedge_outbox_depth"] == 5
        clock = [1000.0]
        wd = ProgressWatchdog(agent, clock=lambda: clock[0], notify=lambda s: True)
        for _ in range(10):
            clock[0] += 60
            agent.pipeline.last_emit = clock[0]
            agent.drivers["tcp"].stats.requests += 1
            assert wd.tick(), wd.last_reason
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sink.close()
