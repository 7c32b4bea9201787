"""The watchdog pings only while poll loops and publishers make progress."""

from __future__ import annotations

import logging

import pytest

from agent.ops.watchdog import ProgressWatchdog, watchdog_service
from tests.agent.ops.fakes import Clock, FakeAgent, FakeSink


class Notes:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, state: str) -> bool:
        self.sent.append(state)
        return True


def make(layout=None, **kw):
    clock = Clock()
    agent = FakeAgent(layout or {"rs485": {"lamp1": 5.0, "lamp2": 10.0}, "tcp": {"meter": 60.0}})
    notes = Notes()
    wd = ProgressWatchdog(agent, clock=clock, notify=notes, **kw)
    return agent, clock, notes, wd


def poll_all(agent: FakeAgent) -> None:
    agent.pipeline.last_emit += 0.5  # every poll hands readings to the pipeline
    for drv in agent.drivers.values():
        drv.stats.requests += 1
        for d in drv.stats.devices.values():
            d.polls += 1


def test_healthy_agent_pings_every_tick() -> None:
    agent, clock, notes, wd = make()
    for _ in range(20):
        poll_all(agent)
        clock.advance(30)
        assert wd.tick()
    assert notes.sent == ["WATCHDOG=1"] * 20


def test_stalled_poll_loop_stops_pings_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    agent, clock, _notes, wd = make()
    assert wd.tick()
    caplog.set_level(logging.ERROR, "cityedge.watchdog")
    # rs485 stops moving (a driver stuck on a read); tcp keeps polling.
    stalled = 0
    for _ in range(10):
        clock.advance(10)
        agent.drivers["tcp"].stats.requests += 1
        if not wd.tick():
            stalled += 1
    # window = max(30 s, 3 x 5 s): the first tick past 30 s stops the pings
    assert stalled == 7
    assert "bus rs485" in (wd.last_reason or "")
    assert len([r for r in caplog.records if "not feeding" in r.getMessage()]) == 1
    # it recovers as soon as the loop moves again
    poll_all(agent)
    clock.advance(1)
    assert wd.tick()
    assert wd.last_reason is None


def test_slow_bus_window_scales_with_its_interval() -> None:
    _agent, clock, _notes, wd = make({"slow": {"tank": 600.0}})
    assert wd.tick()
    clock.advance(1700)  # < 3 x 600 s
    assert wd.tick()
    clock.advance(200)
    assert not wd.tick()


def test_disconnected_or_quarantined_bus_is_legitimately_idle() -> None:
    agent, clock, _notes, wd = make({"rs485": {"lamp1": 5.0}, "tcp": {"meter": 5.0}})
    assert wd.tick()
    agent.drivers["tcp"].stats.connected = False  # reconnect backoff
    agent.dev("tcp", "meter").state = "offline"
    agent.dev("rs485", "lamp1").state = "offline"  # waits for its probe
    agent.dev("rs485", "lamp1").quarantined_until = clock.t + 10_000
    for _ in range(10):
        clock.advance(30)  # every device offline: nothing reaches the pipeline, rightly
        assert wd.tick(), wd.last_reason
    agent.dev("rs485", "lamp1").quarantined_until = 0.0  # back from quarantine but no polls
    clock.advance(30)
    assert not wd.tick()
    assert "rs485" in (wd.last_reason or "")


def test_offline_devices_emit_nothing_and_that_is_no_stall() -> None:
    """An offline device costs the uplink its transitions only (issue 15): while every device
    is offline the pipeline hears nothing; once one answers again, readings must flow."""
    agent, clock, _notes, wd = make({"tcp": {"meter": 5.0}})
    assert wd.tick()
    st = agent.dev("tcp", "meter")
    st.state = "offline"
    for _ in range(5):
        clock.advance(30)
        st.timeouts += 1  # probes go on: the bus loop moves
        assert wd.tick(), wd.last_reason
    st.state = "online"
    clock.advance(30)
    st.polls += 1
    assert not wd.tick()
    assert "no readings from any bus" in (wd.last_reason or "")


def test_idle_buses_but_no_readings_at_all_is_a_stall() -> None:
    agent, clock, _notes, wd = make({"rs485": {"lamp1": 5.0}, "tcp": {"meter": 10.0}})
    assert wd.tick()
    for drv in agent.drivers.values():
        drv.stats.connected = False  # looks like reconnect backoff...
    clock.advance(25)
    assert wd.tick()
    clock.advance(10)  # ...but nothing reached the pipeline for > max(30, 3 x 10) s
    assert not wd.tick()
    assert "no readings from any bus" in (wd.last_reason or "")


def test_stalled_publisher_with_progress_timestamp_stops_pings() -> None:
    agent, clock, notes, wd = make({"tcp": {"meter": 5.0}}, publisher_window=120.0)
    sink = FakeSink("mqtt")
    sink.counters.last_progress = clock.t
    agent.sinks.append(sink)
    for _ in range(3):
        poll_all(agent)
        clock.advance(30)
        sink.counters.last_progress = clock.t
        assert wd.tick()
    for _ in range(5):  # publisher wedged: polls go on, last_progress frozen
        poll_all(agent)
        clock.advance(30)
        wd.tick()
    assert notes.sent.count("WATCHDOG=1") == 3 + 4  # 30..120 s are inside the 120 s window
    assert "output mqtt" in (wd.last_reason or "")


def test_publisher_counters_backlog_connected_no_acks_is_a_stall() -> None:
    agent, clock, _notes, wd = make({"tcp": {"meter": 5.0}}, publisher_window=60.0)
    sink = FakeSink("mqtt")
    agent.sinks.append(sink)
    sink.counters.outbox_depth = 500
    assert wd.tick()
    for _ in range(3):
        poll_all(agent)
        clock.advance(30)
        wd.tick()
    assert wd.last_reason and "500 queued" in wd.last_reason


@pytest.mark.parametrize("case", ["empty outbox", "broker down"])
def test_publisher_idle_for_a_good_reason_is_not_a_stall(case: str) -> None:
    agent, clock, _notes, wd = make({"tcp": {"meter": 5.0}}, publisher_window=60.0)
    sink = FakeSink("mqtt")
    agent.sinks.append(sink)
    if case == "broker down":
        sink.counters.connected = False
        sink.counters.outbox_depth = 10_000
    for _ in range(10):
        poll_all(agent)
        clock.advance(30)
        assert wd.tick(), wd.last_reason


def test_service_absent_without_systemd_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_service(FakeAgent({}), None) is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    pair = watchdog_service(FakeAgent({}), None)
    assert pair is not None


async def test_service_task_pings_through_notify() -> None:
    import asyncio

    notes = Notes()
    pair = watchdog_service(FakeAgent({"tcp": {"m": 1.0}}), 0.01, notify=notes)
    assert pair is not None
    task = asyncio.create_task(pair[1](), name="watchdog")
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert notes.sent and set(notes.sent) == {"WATCHDOG=1"}
