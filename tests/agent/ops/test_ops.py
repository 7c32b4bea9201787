"""attach_operations: which services are added, and what happens at clock sync."""

from __future__ import annotations

import logging

import pytest

from agent.config.gateway import GatewayConfig
from agent.ops.ops import attach_operations
from agent.ops.timesync import ClockOffset, TimeKeeper
from drivers.core.reading import Reading, TimeQuality
from tests.agent.ops.fakes import Clock, FakeAgent, FakeSink

NOW = 1_790_000_000.0


class OutboxSink(FakeSink):
    def __init__(self) -> None:
        super().__init__("mqtt")
        self.offsets: list[ClockOffset] = []

    def correct_unsynced(self, offset: ClockOffset) -> int:
        self.offsets.append(offset)
        return 42


def test_services_follow_config_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    cfg = GatewayConfig.model_validate({"gateway": {"id": "g"}, "metrics": {"enabled": False}})
    agent = FakeAgent({"tcp": {"m": 5}})
    ops = attach_operations(agent, cfg)  # type: ignore[arg-type]
    assert [n for n, _ in agent.services] == ["timesync"]
    assert ops.http is None and ops.watchdog is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    agent2 = FakeAgent({"tcp": {"m": 5}})
    ops2 = attach_operations(agent2, GatewayConfig.model_validate({"gateway": {"id": "g"}}))  # type: ignore[arg-type]
    assert [n for n, _ in agent2.services] == ["timesync", "watchdog", "http"]
    assert ops2.http is not None and (ops2.http.host, ops2.http.port) == ("127.0.0.1", 9108)


def test_sync_corrects_last_values_and_asks_sinks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "cityedge")
    wall, mono = Clock(1_000.0), Clock(50.0)  # booted in 1970
    synced = {"v": False}
    keeper = TimeKeeper(
        wall=wall, mono=mono, kernel_probe=lambda: None, marker_probe=lambda: synced["v"]
    )
    agent = FakeAgent({"tcp": {"m": 5}})
    sink = OutboxSink()
    agent.sinks.append(sink)
    cfg = GatewayConfig.model_validate({"gateway": {"id": "g"}, "metrics": {"enabled": False}})
    ops = attach_operations(agent, cfg, timekeeper=keeper)  # type: ignore[arg-type]
    r = Reading("g", "m", "k", "p", "m", 1.0, None, None, 1_000_000)
    agent.pipeline.last_values[("m", "p")] = ops.timekeeper.mark([r])[0]
    assert agent.pipeline.last_values[("m", "p")].time_quality is TimeQuality.UNSYNCED
    wall.t, synced["v"] = NOW, True  # NTP stepped the clock and timesyncd wrote its marker
    mono.advance(1)
    off = keeper.check()
    assert off is not None
    fixed = agent.pipeline.last_values[("m", "p")]
    assert fixed.time_quality is TimeQuality.CORRECTED
    assert fixed.observed_at_ms == 1_000_000 + round(off.offset_s * 1000)
    assert sink.offsets == [off]
    assert "corrected 42 pre-sync" in caplog.text


def test_pipeline_marks_readings_only_while_the_clock_is_not_synchronised() -> None:
    wall, mono = Clock(NOW), Clock(50.0)
    synced = {"v": False}
    keeper = TimeKeeper(
        wall=wall, mono=mono, kernel_probe=lambda: None, marker_probe=lambda: synced["v"]
    )
    agent = FakeAgent({"tcp": {"m": 5}})
    cfg = GatewayConfig.model_validate({"gateway": {"id": "g"}, "metrics": {"enabled": False}})
    attach_operations(agent, cfg, timekeeper=keeper)  # type: ignore[arg-type]
    assert agent.pipeline.time_mark == keeper.mark
    synced["v"] = True
    mono.advance(1)
    wall.advance(1)
    keeper.check()
    assert agent.pipeline.time_mark is None  # synchronised: no call per batch
    synced["v"] = False  # timesyncd lost its servers and removed the marker
    mono.advance(1)
    wall.advance(1)
    keeper.check()
    assert agent.pipeline.time_mark == keeper.mark
