"""Wire the operational services into an Agent: metrics/health endpoint, watchdog, clock.

One call from ``agent/cli/run.py`` after the Agent is built and before ``agent.run()``::

    ops = attach_operations(agent)   # appends its tasks to agent.services, sets the pipeline's
                                     # time marking and listens to the agent's reloads

At clock sync the readings still held in ``pipeline.last_values`` are corrected and every sink
that stores readings (``ClockFixSink``, agent/ops/timesync.py) is asked to correct what it
stores (the outbox).

Everything here reads the agent's counters when asked; nothing runs per reading except
``TimeKeeper.mark``, and that only while the clock is not synchronised (the keeper sets and
clears the pipeline's ``time_mark`` as synchronisation comes and goes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.config.gateway import GatewayConfig
from agent.ops import sdnotify
from agent.ops.health import HealthReport
from agent.ops.httpd import HttpEndpoint, http_service
from agent.ops.timesync import ClockFixSink, TimeKeeper, correct_reading, timesync_service
from agent.ops.watchdog import ProgressWatchdog, watchdog_service

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("cityedge.ops")


@dataclass
class Operations:
    health: HealthReport
    timekeeper: TimeKeeper
    http: HttpEndpoint | None  # None when [metrics] enabled = false
    watchdog: ProgressWatchdog | None  # None when systemd did not enable a watchdog

    def note_reload(self, ok: bool, message: str) -> None:
        """Record a reload's outcome for /health (a refused one makes the status degraded)."""
        self.health.note_reload(ok, message)


def attach_operations(
    agent: Agent,
    config: GatewayConfig | None = None,
    *,
    timekeeper: TimeKeeper | None = None,
    watchdog_interval: float | None = None,
    notify: Callable[[str], bool] = sdnotify.notify,
) -> Operations:
    """Build the services and append them to ``agent.services`` (started by ``Agent.run``).

    ``config`` defaults to ``agent.loaded.config``; ``watchdog_interval`` to half of systemd's
    ``$WATCHDOG_USEC`` (no watchdog task when neither is set)."""
    cfg = config if config is not None else agent.loaded.config
    keeper = timekeeper if timekeeper is not None else TimeKeeper()
    wd_pair = watchdog_service(agent, watchdog_interval, notify=notify)
    wd = wd_pair[0] if wd_pair is not None else None
    health = HealthReport(
        agent,
        gateway_id=cfg.gateway.id,
        timekeeper=keeper,
        watchdog=wd,
        alarms=getattr(agent, "alarms", None),
    )
    agent.services.append(("timesync", timesync_service(keeper)))
    if wd_pair is not None:
        agent.services.append(("watchdog", wd_pair[1]))
    endpoint: HttpEndpoint | None = None
    if cfg.metrics.enabled:
        endpoint, factory = http_service(agent, cfg.metrics.host, cfg.metrics.port, health)
        agent.services.append(("http", factory))
    keeper.on_sync(lambda _offset_s: _correct_presync(agent, keeper))
    keeper.on_change(lambda synced: _mark_unless(agent, keeper, synced))
    agent.reload_listeners.append(lambda r: health.note_reload(r.ok, r.summary()))
    if not keeper.synced:
        log.warning(
            "wall clock not synchronised (%s): readings are flagged timeQuality=unsynced "
            "until it is",
            keeper.source,
        )
    return Operations(health, keeper, endpoint, wd)


def _mark_unless(agent: Agent, keeper: TimeKeeper, synced: bool) -> None:
    agent.pipeline.time_mark = None if synced else keeper.mark


def _correct_presync(agent: Agent, keeper: TimeKeeper) -> None:
    """At sync: fix the last values held in memory and let each sink fix what it stores.

    A sink opts in by implementing ``ClockFixSink`` (agent/ops/timesync.py)."""
    off = keeper.last_sync
    if off is None:
        return
    values = agent.pipeline.last_values
    for key, r in list(values.items()):
        values[key] = correct_reading(r, off)
    for sink in agent.sinks:
        if not isinstance(sink, ClockFixSink):
            continue
        try:
            n = sink.correct_unsynced(off)
            if n is None:
                log.info("output %s: pre-sync readings of this boot corrected", sink.name)
            else:
                log.info("output %s: corrected %s pre-sync reading(s)", sink.name, n)
        except Exception:
            log.exception("output %s: correcting pre-sync timestamps failed", sink.name)
