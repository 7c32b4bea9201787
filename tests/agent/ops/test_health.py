"""Health verdicts from the agent's counters (fake agent, injected clocks)."""

from __future__ import annotations

from agent.ops.health import HealthReport
from agent.ops.timesync import TimeKeeper
from agent.ops.watchdog import ProgressWatchdog
from tests.agent.ops.fakes import Clock, FakeAgent, FakeSink


def report(agent: FakeAgent, **kw) -> HealthReport:
    return HealthReport(agent, gateway_id="gw", mono=Clock(1010.0), wall=Clock(1.79e9), **kw)


def test_ok_when_everything_answers() -> None:
    agent = FakeAgent({"rs485": {"a": 5, "b": 5}})
    agent.sinks.append(FakeSink("mqtt"))
    doc = report(agent).document()
    assert doc["status"] == "ok" and doc["reasons"] == []
    assert doc["outputs"]["mqtt"]["connected"] is True
    assert doc["outputs"]["mqtt"]["outbox"] == {"depth": 0, "oldest_age_s": 0.0, "dropped": 0}


def test_some_devices_down_is_degraded_all_down_is_failing() -> None:
    agent = FakeAgent({"rs485": {"a": 5, "b": 5, "c": 5}})
    a = agent.dev("rs485", "a")
    a.online, a.state, a.reason, a.state_since_ms = False, "offline", "timeout", 1_789_999_000_000
    c = agent.dev("rs485", "c")
    c.state, c.reason, c.detail = "degraded", "exception", "points p10 failing"
    doc = report(agent).document()
    assert doc["status"] == "degraded"
    assert doc["reasons"] == [
        "1 device(s) offline: a (timeout)",
        "1 device(s) degraded: c (exception)",
    ]
    assert doc["devices"]["a"]["since"] == "2026-09-21T13:56:40.000Z"
    assert doc["devices"]["c"]["detail"] == "points p10 failing"
    for dev in ("b", "c"):
        d = agent.dev("rs485", dev)
        d.state, d.reason, d.quarantined_until = "offline", "exception", 1015.0
    doc = report(agent).document()
    assert doc["status"] == "failing"
    assert doc["devices"]["b"]["status"] == "offline"
    assert doc["devices"]["b"]["reason"] == "exception"
    assert doc["devices"]["b"]["next_probe_s"] == 5.0


def test_broker_down_buffers_then_fails_when_dropping() -> None:
    agent = FakeAgent({"tcp": {"m": 5}})
    sink = FakeSink("mqtt")
    sink.counters.connected = False
    sink.counters.outbox_depth = 1000
    sink.counters.outbox_oldest_age_s = 3600.0  # an hour before the report's wall clock
    agent.sinks.append(sink)
    doc = report(agent).document()
    assert doc["status"] == "degraded"
    assert doc["outputs"]["mqtt"]["outbox"]["oldest_age_s"] == 3600.0
    sink.counters.outbox_dropped = 7
    assert report(agent).document()["status"] == "failing"


def test_not_ready_after_deadline_and_watchdog_stall_are_failing() -> None:
    agent = FakeAgent({"tcp": {"m": 5}})
    agent.ready_at = None
    assert report(agent).document()["status"] == "ok"  # 10 s after start: still starting
    h = HealthReport(agent, mono=Clock(1100.0), wall=Clock(1.79e9))
    assert h.document()["status"] == "failing"
    agent.ready_at = 1001.0
    wd = ProgressWatchdog(agent)
    wd.last_reason = "bus tcp: no poll progress for 90 s (limit 30 s)"
    doc = report(agent, watchdog=wd).document()
    assert doc["status"] == "failing" and doc["reasons"][0].startswith("watchdog: bus tcp")


def test_unsynced_clock_and_refused_reload_are_degraded() -> None:
    agent = FakeAgent({"tcp": {"m": 5}})
    tk = TimeKeeper(kernel_probe=lambda: True, marker_probe=lambda: None)
    h = report(agent, timekeeper=tk)
    h.note_reload(False, "buses[0].endpoint: unknown scheme 'tcpp'")
    doc = h.document()
    assert doc["status"] == "degraded"
    assert doc["clock"]["quality"] == "unsynced"
    assert len(doc["reasons"]) == 2
    assert doc["reload"]["last"]["message"].startswith("buses[0]")
