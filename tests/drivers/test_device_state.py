"""The device-state model (drivers/device_state.py) without sockets: an injected clock, what
each poll came to, and the transitions it must (and must not) produce."""

from __future__ import annotations

import errno
import logging
import random
import socket

import pytest

from drivers.base import DeviceStats
from drivers.device_state import DeviceHealth, Reason, State, Transition, link_reason


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> int:
        return int(1_800_000_000_000 + self.t * 1000)


def health(**kw: object) -> tuple[DeviceHealth, DeviceStats, Clock]:
    clock, st = Clock(), DeviceStats()
    h = DeviceHealth(
        "meter",
        "b1",
        st,
        clock=clock,
        wall_ms=clock.wall,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )
    return h, st, clock


def states(ts: list[Transition | None]) -> list[tuple[str, str | None]]:
    return [(t.state.value, t.reason and t.reason.value) for t in ts if t is not None]


def test_first_good_poll_is_online_once() -> None:
    h, st, _ = health()
    assert h.state is State.UNKNOWN and st.state == "unknown"
    t = h.good()
    assert t is not None and (t.previous, t.state, t.reason) == (State.UNKNOWN, State.ONLINE, None)
    assert t.online and st.online and st.state == "online" and st.transitions == 1
    assert h.good() is None and h.good() is None  # no transition per tick
    assert st.transitions == 1


@pytest.mark.parametrize(
    "reason",
    [Reason.TIMEOUT, Reason.REFUSED, Reason.RESET, Reason.NO_ROUTE, Reason.PORT_GONE],
)
def test_silence_and_link_faults_take_a_device_offline_at_the_first_failed_poll(
    reason: Reason,
) -> None:
    h, st, _ = health()
    h.good()
    t = h.failed(reason, "why")
    assert t is not None and (t.state, t.reason, t.detail) == (State.OFFLINE, reason, "why")
    assert not t.online and not st.online and (st.state, st.reason) == ("offline", reason.value)
    assert h.failed(reason) is None  # once per transition, not per failed poll


@pytest.mark.parametrize("reason", [Reason.BAD_FRAMES, Reason.EXCEPTION])
def test_garbage_and_exceptions_go_offline_at_the_first_failed_poll(reason: Reason) -> None:
    """The poll's retries were the hysteresis (the issue's bound leaves no second poll)."""
    h, _, _ = health()
    h.good()
    t = h.failed(reason, "every retry garbled")
    assert t is not None and (t.state, t.reason) == (State.OFFLINE, reason)


@pytest.mark.parametrize("reason", [Reason.BAD_FRAMES, Reason.EXCEPTION])
def test_offline_after_n_polls_when_configured(reason: Reason) -> None:
    h, st, _ = health(offline_after=2)
    h.good()
    assert h.failed(reason) is None and st.state == "online"  # one garbled poll: noise
    assert h.good() is None  # and a good one resets the count
    assert h.failed(reason) is None
    t = h.failed(reason, "again")
    assert t is not None and (t.state, t.reason) == (State.OFFLINE, reason)


def test_offline_after_t_seconds_even_before_n_polls() -> None:
    h, _, clock = health(offline_after=5, offline_after_s=2.0)  # a slower hysteresis
    h.good()
    assert h.failed(Reason.BAD_FRAMES) is None
    clock.t += 1.0
    assert h.failed(Reason.BAD_FRAMES) is None
    clock.t += 1.0
    t = h.failed(Reason.BAD_FRAMES)
    assert t is not None and t.state is State.OFFLINE


def test_online_again_at_the_first_good_poll_and_the_log_says_how_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "cityedge.devices")
    h, st, clock = health()
    h.good()
    clock.t += 5
    h.failed(Reason.TIMEOUT, "no answer after 2 tries")
    clock.t += 12.5
    t = h.good()
    assert t is not None and (t.previous, t.state) == (State.OFFLINE, State.ONLINE)
    assert st.state_since_ms == clock.wall() and st.reason is None
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        (logging.INFO, "bus b1 device meter: online"),
        (logging.WARNING, "bus b1 device meter: offline (timeout: no answer after 2 tries)"),
        (logging.WARNING, "bus b1 device meter: online again after 12.5 s offline"),
    ]


def test_degraded_when_points_fail_or_are_excluded() -> None:
    h, st, _ = health()
    ts = [
        h.good({"p10": Reason.EXCEPTION}),
        h.good({"p10": Reason.EXCEPTION, "p11": Reason.EXCEPTION}),  # same state: nothing
        h.good(excluded=1),  # learned and no longer polled: still degraded
        h.good(),
        h.good({"t": Reason.BAD_VALUE}),
    ]
    assert states(ts) == [
        ("degraded", "exception"),
        ("online", None),
        ("degraded", "bad value"),
    ]
    assert st.detail == "points t failing"
    h.failed(Reason.TIMEOUT)
    t = h.good({"t": Reason.BAD_VALUE})
    assert t is not None and (t.previous, t.state) == (State.OFFLINE, State.DEGRADED) and t.online


def test_offline_device_is_probed_with_backoff_when_it_has_neighbours() -> None:
    h, st, clock = health(probe_min=1.0, probe_max=8.0)
    h.good()
    h.failed(Reason.TIMEOUT)
    assert h.probing and not h.may_poll(clock.t)
    delays = []
    for _ in range(6):
        delays.append(h.probe_at - clock.t)
        assert st.quarantined_until == h.probe_at
        clock.t = h.probe_at
        assert h.may_poll(clock.t)
        h.failed(Reason.TIMEOUT)
    for d, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert base * 0.8 <= d <= min(8.0, base * 1.2)
    h.good()
    assert h.probe_at == 0 and st.quarantined_until == 0 and not h.probing


def test_offline_device_alone_on_its_bus_is_probed_every_tick() -> None:
    h, _, clock = health()
    h.good()
    h.failed(Reason.EXCEPTION, shared=False)
    assert h.offline and h.may_poll(clock.t)


def test_link_faults_leave_the_probe_to_the_reconnect() -> None:
    h, _, clock = health()
    h.good()
    h.failed(Reason.TIMEOUT)
    assert not h.may_poll(clock.t)
    h.failed(Reason.REFUSED)  # the link went: the first poll on a new link is the probe
    assert h.may_poll(clock.t) and h.stats.reason == "refused"


def test_offline_from_unknown_is_a_transition() -> None:
    h, _, _ = health()
    t = h.failed(Reason.REFUSED, "ConnectionRefusedError")
    assert t is not None and (t.previous, t.state) == (State.UNKNOWN, State.OFFLINE)


def test_link_reasons() -> None:
    assert link_reason(ConnectionRefusedError()) is Reason.REFUSED
    assert link_reason(ConnectionResetError()) is Reason.RESET
    assert link_reason(BrokenPipeError()) is Reason.RESET
    assert link_reason(OSError(errno.EHOSTUNREACH, "no route")) is Reason.NO_ROUTE
    assert link_reason(OSError(errno.ENETUNREACH, "unreachable")) is Reason.NO_ROUTE
    assert link_reason(socket.gaierror(-2, "Name or service not known")) is Reason.NO_ROUTE
    assert link_reason(TimeoutError()) is Reason.TIMEOUT
    assert link_reason(None) is Reason.RESET
    assert link_reason(FileNotFoundError(2, "gone"), serial=True) is Reason.PORT_GONE
    assert link_reason(None, serial=True) is Reason.PORT_GONE
