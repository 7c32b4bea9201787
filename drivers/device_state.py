"""Device state: one model for every bus kind, decided here and nowhere else (sans-I/O).

A device is ``online``, ``degraded`` (it answers, but some of its points fail: the device
rejects them, or their values cannot be decoded) or ``offline`` with a reason. Before its
first poll it is ``unknown``. The bus owner reports what each poll (or each tick without a
link) came to; :class:`DeviceHealth` decides the state, keeps ``DeviceStats`` in step, logs
one line per transition and returns the :class:`Transition` for the bus owner to hand on
(``drivers.base.StateListener``): native device status, Sparkplug DDEATH / DBIRTH, NGSI-LD
``deviceState``, all from that one event.

Hysteresis. Offline after ``offline_after`` failed polls in a row, or once the failures have
lasted ``offline_after_s``; online again at the first good poll. A poll fails when it got
nothing usable: every request silent or garbled after all its retries, exception replies to
every read, or no link. ``offline_after`` is 1: the issue's bound (offline within
max(2 x interval, (retries + 1) x timeout + 1 s) of the fault) leaves no room for a second
poll when the fault starts just after a tick. The hysteresis is the poll's own retries
(``bus.retries``, default 1): one noisy frame is retried, not a dead device; two garbled or
silent answers in a row are. A lost link counts at the first tick without it.

Probing. An offline device is polled only when its probe is due, without retries, so it costs
its neighbours at most one timeout per probe period. The period starts at ``probe_min`` and
doubles (+-20 % jitter) to ``probe_max``; a device with no live neighbour on its bus is probed
on every tick instead (there is nobody to slow down, and it comes back within one interval).
Link faults (refused, reset, no route, port gone) set no probe delay: the bus owner's
reconnect backoff paces them, and the first poll on a new link is the probe.

Only a change of state is a transition. While offline the reason may change (timeout, then
refused): ``DeviceStats`` shows the current one, the published transition keeps the one that
caused it.
"""

from __future__ import annotations

import enum
import errno
import logging
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from drivers.base import DeviceStats
from drivers.core.reading import now_ms
from drivers.schedule import Backoff

log = logging.getLogger("cityedge.devices")


class State(enum.StrEnum):
    UNKNOWN = "unknown"  # not polled yet
    ONLINE = "online"
    DEGRADED = "degraded"  # answers, some points fail
    OFFLINE = "offline"


class Reason(enum.StrEnum):
    TIMEOUT = "timeout"  # no answer (after the retries)
    REFUSED = "refused"  # the endpoint refuses connections
    RESET = "reset"  # the link was reset or closed by the peer
    NO_ROUTE = "no route"  # host or network unreachable, name not resolved
    PORT_GONE = "port gone"  # the serial port disappeared (USB adapter unplugged)
    BAD_FRAMES = "bad frames"  # it answers, with frames that never check out
    EXCEPTION = "exception"  # it answers with exception replies (or rejects points)
    BAD_VALUE = "bad value"  # degraded only: a point's value cannot be decoded


LINK_REASONS = frozenset({Reason.REFUSED, Reason.RESET, Reason.NO_ROUTE, Reason.PORT_GONE})
# offline at the first failed poll even with ``offline_after`` > 1: the link is gone, or every
# retry of the poll met silence
IMMEDIATE = LINK_REASONS | {Reason.TIMEOUT}
_UP = (State.ONLINE, State.DEGRADED)


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of a device's state, as every output publishes it."""

    device_id: str
    bus_id: str
    state: State
    previous: State
    reason: Reason | None  # None when online
    detail: str | None  # for people: "no answer after 2 tries", "points p10, p11"
    at_ms: int  # wall clock, UTC epoch ms

    @property
    def online(self) -> bool:
        """Up (online or degraded): the device answers."""
        return self.state in _UP


def link_reason(exc: BaseException | None, *, serial: bool = False) -> Reason:
    """The device-state reason of a link failure (``exc`` as raised by the socket, pyserial or
    asyncio, or None when unknown). On a local serial port every failure means the port is
    gone or unusable: reopening it is the only remedy either way."""
    if serial:
        return Reason.PORT_GONE
    if isinstance(exc, ConnectionRefusedError):
        return Reason.REFUSED
    if isinstance(exc, socket.gaierror):
        return Reason.NO_ROUTE
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT
    code = getattr(exc, "errno", None)
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN):
        return Reason.NO_ROUTE
    if code == errno.ECONNREFUSED:
        return Reason.REFUSED
    return Reason.RESET


class DeviceHealth:
    """The state of one device. Not thread-safe: only its bus owner calls it."""

    def __init__(
        self,
        device_id: str,
        bus_id: str,
        stats: DeviceStats,
        *,
        offline_after: int = 1,
        offline_after_s: float | None = None,
        probe_min: float = 1.0,
        probe_max: float = 60.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.device_id = device_id
        self.bus_id = bus_id
        self.stats = stats
        self.offline_after = max(1, offline_after)
        self.offline_after_s = offline_after_s
        self._clock = clock
        self._wall_ms = wall_ms
        self._probe = Backoff(probe_min, max(probe_min, probe_max), rng=rng)
        self.state = State.UNKNOWN
        self.failures = 0  # failed polls in a row
        self._failing_since = 0.0
        self._since = clock()
        self.probe_at = 0.0  # monotonic; an offline device is polled from then on

    # --- what the bus owner asks -------------------------------------------------------
    @property
    def offline(self) -> bool:
        return self.state is State.OFFLINE

    @property
    def probing(self) -> bool:
        """Offline: the next poll is a probe (one try, no retries)."""
        return self.state is State.OFFLINE

    def may_poll(self, now: float) -> bool:
        return self.state is not State.OFFLINE or now >= self.probe_at

    # --- what the bus owner reports ----------------------------------------------------
    def good(
        self, failing: Mapping[str, Reason] | None = None, excluded: int = 0
    ) -> Transition | None:
        """A poll got answers. ``failing``: the points that failed in it for a reason of the
        device's own (it rejects them, their value cannot be decoded); ``excluded``: points
        not polled any more because the device rejected them."""
        self.failures = 0
        self._probe.reset()
        self.probe_at = 0.0
        st = self.stats
        st.online = True
        st.quarantined_until = 0.0
        if not failing and not excluded:
            return self._set(State.ONLINE, None, None)
        failing = failing or {}
        reasons = set(failing.values())
        reason = (
            Reason.EXCEPTION
            if excluded or Reason.EXCEPTION in reasons or not reasons
            else min(reasons)
        )
        names = sorted(failing)
        detail = f"points {_names(names)} failing" if names else ""
        if excluded:
            detail += f"{'; ' if detail else ''}{excluded} point(s) excluded"
        return self._set(State.DEGRADED, reason, detail)

    def failed(
        self, reason: Reason, detail: str | None = None, *, shared: bool = True, probed: bool = True
    ) -> Transition | None:
        """A poll got nothing usable. ``shared``: the bus has other devices that answer, so
        probes back off instead of running every tick. ``probed=False``: a tick that found the
        link down (nothing was sent; the probe schedule stays as it is)."""
        now = self._clock()
        if self.failures == 0:
            self._failing_since = now
        self.failures += 1
        st = self.stats
        transition = None
        if self.state is not State.OFFLINE:
            due = self.failures >= (1 if reason in IMMEDIATE else self.offline_after)
            late = (
                self.offline_after_s is not None
                and now - self._failing_since >= self.offline_after_s
            )
            if not (due or late):
                return None
            transition = self._set(State.OFFLINE, reason, detail)
        else:
            st.reason, st.detail = reason.value, detail
        st.online = False
        if reason in LINK_REASONS:
            self.probe_at = 0.0  # the reconnect backoff paces it; the first poll probes
        elif not probed:
            pass
        elif shared:
            self.probe_at = now + self._probe.next()
        else:
            self.probe_at = now  # nobody to slow down: probe on every tick
        st.quarantined_until = self.probe_at
        return transition

    # --- internals ---------------------------------------------------------------------
    def _set(self, state: State, reason: Reason | None, detail: str | None) -> Transition | None:
        st = self.stats
        st.reason = None if reason is None else reason.value
        st.detail = detail or None
        if state is self.state:
            return None
        previous, self.state = self.state, state
        now = self._clock()
        lasted, self._since = now - self._since, now
        at = self._wall_ms()
        st.state = state.value
        st.state_since_ms = at
        st.transitions += 1
        t = Transition(self.device_id, self.bus_id, state, previous, reason, detail or None, at)
        self._log(t, lasted)
        return t

    def _log(self, t: Transition, lasted: float) -> None:
        head = f"bus {self.bus_id} device {self.device_id}"
        why = ""
        if t.reason is not None:
            why = f" ({t.reason.value}{': ' + t.detail if t.detail else ''})"
        if t.previous is State.UNKNOWN and t.state is State.ONLINE:
            log.info("%s: online", head)
            return
        if t.state is State.OFFLINE:
            log.warning("%s: offline%s", head, why)
        elif t.previous is State.OFFLINE:
            log.warning("%s: %s again after %.1f s offline%s", head, t.state.value, lasted, why)
        else:
            log.warning("%s: %s%s", head, t.state.value, why)


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} (+{len(names) - limit})"
