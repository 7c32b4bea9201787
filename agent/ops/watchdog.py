"""systemd watchdog fed only while the agent makes progress.

``WATCHDOG=1`` from a timer alone would only prove the event loop runs. This service pings only
when every bus loop and every publisher has moved recently, so a hung poll loop (a driver stuck
on a lock, a serial read that never returns) or a wedged publisher stops the pings and systemd
restarts the agent (``WatchdogSec=`` in the unit; ``Restart=on-failure`` covers SIGABRT).

Progress rules, checked every ``interval`` (half of ``WatchdogSec``):

- a bus progresses when any of its counters (requests, reconnects, and per device polls,
  timeouts, exceptions, overruns) changed within
  ``max(min_window, factor × shortest device interval)``;
- a bus is legitimately idle while disconnected (the driver is in reconnect backoff) or while
  every device on it is offline and waiting for its probe; ``pipeline.last_emit`` must move
  within ``factor ×`` the longest device interval while any device answers (an offline one
  emits nothing: it costs the uplink its transitions only);
- a sink that reports ``last_progress`` (monotonic, see agent/ops/observe.py) progresses when it is
  within ``publisher_window``; otherwise its ``messages`` counter must move while it has an
  outbox backlog and a connected link. An empty outbox or a broker outage is not a stall: the
  outbox buffers and a restart would not help.

A stall is logged once (with the culprit) when the pings stop, and once more when they resume.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from agent.ops import sdnotify
from agent.ops.observe import AgentView, bus_intervals
from drivers.base import BusStats

log = logging.getLogger("cityedge.watchdog")


def _fingerprint(stats: BusStats) -> tuple[int, ...]:
    out = [stats.requests, stats.reconnects]
    for d in stats.devices.values():
        out += (d.polls, d.timeouts, d.exceptions, d.overruns, d.requests)
    return tuple(out)


@dataclass
class _Seen:
    value: object
    at: float  # monotonic time the value last changed


@dataclass
class ProgressWatchdog:
    agent: AgentView
    clock: Callable[[], float] = time.monotonic
    notify: Callable[[str], bool] = sdnotify.notify
    factor: float = 3.0
    min_window: float = 30.0
    publisher_window: float = 120.0
    startup_grace: float = 60.0  # no verdict on a bus before it had a chance to open and poll
    last_reason: str | None = None
    pings: int = 0
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def _moved(self, key: str, value: object, now: float) -> float:
        """Monotonic time ``value`` was last seen to change (first sight counts as a change)."""
        s = self._seen.get(key)
        if s is None or s.value != value:
            self._seen[key] = s = _Seen(value, now)
        return s.at

    def _bus_stall(self, now: float) -> str | None:
        intervals = bus_intervals(self.agent)
        answering = any(
            d.state != "offline"
            for drv in self.agent.drivers.values()
            for d in drv.stats.devices.values()
        )
        if self.agent.drivers and intervals and answering:
            # Drivers emit every poll of a device that answers, so a pipeline that hears from
            # no bus at all while some device is up means every loop is stuck.
            window = max(self.min_window, self.factor * max(intervals.values()))
            since = self._moved("emit", self.agent.pipeline.last_emit, now)
            if now - since > window:
                return f"no readings from any bus for {now - since:.0f} s (limit {window:.0f} s)"
        for bus_id, drv in self.agent.drivers.items():
            st = drv.stats
            window = max(self.min_window, self.factor * intervals.get(bus_id, self.min_window))
            since = self._moved(f"bus:{bus_id}", _fingerprint(st), now)
            if now - since <= window:
                continue
            if not st.connected:
                continue  # reconnect backoff: nothing to do on the wire until it reopens
            devs = st.devices.values()
            if devs and all(d.state == "offline" and d.quarantined_until > now for d in devs):
                continue  # every device waits for its probe
            return f"bus {bus_id}: no poll progress for {now - since:.0f} s (limit {window:.0f} s)"
        return None

    def _sink_stall(self, now: float) -> str | None:
        for sink in self.agent.sinks:
            snap = sink.stats()
            if snap.last_progress is not None:
                if now - snap.last_progress > self.publisher_window:
                    age = now - snap.last_progress
                    return f"output {snap.name}: publisher made no progress for {age:.0f} s"
                continue
            if snap.messages is None:
                continue  # nothing observable (e.g. a file sink): cannot stall visibly
            since = self._moved(f"sink:{snap.name}", snap.messages, now)
            backlog = bool(snap.outbox_depth)
            if backlog and snap.connected is not False and now - since > self.publisher_window:
                return (
                    f"output {snap.name}: {snap.outbox_depth} queued but nothing published "
                    f"for {now - since:.0f} s"
                )
            if not backlog or snap.connected is False:
                self._seen[f"sink:{snap.name}"] = _Seen(snap.messages, now)
        return None

    def check(self) -> str | None:
        """None when the agent makes progress, else why not."""
        now = self.clock()
        if now - self.agent.started_at < self.startup_grace and self.agent.ready_at is None:
            return None
        return self._bus_stall(now) or self._sink_stall(now)

    def tick(self) -> bool:
        """Check once; send ``WATCHDOG=1`` if healthy. Returns whether it pinged."""
        reason = self.check()
        if reason is not None:
            if reason.split(":")[0] != (self.last_reason or "").split(":")[0]:
                log.error("watchdog: not feeding systemd (%s)", reason)
            self.last_reason = reason
            return False
        if self.last_reason is not None:
            log.warning("watchdog: progress resumed; feeding systemd again")
            self.last_reason = None
        self.notify("WATCHDOG=1")
        self.pings += 1
        return True

    async def run(self, interval: float) -> None:
        while True:
            self.tick()
            await asyncio.sleep(interval)


def watchdog_service(
    agent: AgentView,
    interval: float | None = None,
    *,
    notify: Callable[[str], bool] = sdnotify.notify,
) -> tuple[ProgressWatchdog, Callable[[], Coroutine[Any, Any, None]]] | None:
    """The watchdog and its coroutine factory for ``Agent.services``; None when systemd did
    not enable a watchdog for this process (``$WATCHDOG_USEC`` unset) and none was asked."""
    if interval is None:
        interval = sdnotify.watchdog_interval()
    if interval is None:
        return None
    wd = ProgressWatchdog(agent, notify=notify)
    every = interval
    return wd, lambda: wd.run(every)
