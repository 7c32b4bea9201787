"""Prometheus text exposition of the agent's counters, read at scrape time.

A custom collector walks the counters the hot path keeps anyway (drivers' ``BusStats``, the
pipeline, the sinks' stats): no metric object is touched per reading. Every family is prefixed
``cityedge_``; counters get the ``_total`` suffix. Rates (utilization, publish
rate) are for PromQL: ``rate(cityedge_bus_busy_seconds_total[5m])`` is the bus utilization,
``rate(cityedge_published_messages_total[5m])`` the publish rate.

Process figures (``process_*``) come from ``agent/ops/procstat.py`` rather than prometheus-client's
ProcessCollector: that one needs ``/proc/stat`` for the boot time, which the unit's
``ProcSubset=pid`` hides, and then reports nothing at all; and it reads RSS and CPU from
``/proc/self/stat``, which qemu-user fills with zeros.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from agent import __version__
from agent.ops import procstat, promtext
from agent.ops.observe import AgentView, bus_of
from agent.ops.promtext import CONTENT_TYPE, Counter, Family, Gauge, Info

if TYPE_CHECKING:
    from agent.ops.timesync import TimeKeeper

__all__ = ["CONTENT_TYPE", "AgentCollector", "make_registry", "render"]
_NAN = math.nan
_STATES = ("online", "degraded", "offline", "unknown")


def _g(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
    return Gauge(f"cityedge_{name}", doc, labels=list(labels))


def _c(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
    return Counter(f"cityedge_{name}", doc, labels=list(labels))


class AgentCollector:
    def __init__(
        self,
        agent: AgentView,
        *,
        timekeeper: TimeKeeper | None = None,
        mono: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.timekeeper = timekeeper
        self._mono = mono
        self._wall = wall

    def collect(self) -> Iterable[Family]:
        yield from self._agent()
        yield from self._devices()
        yield from self._buses()
        yield from self._sinks()
        yield from _process()

    def _agent(self) -> Iterable[Family]:
        a, p = self.agent, self.agent.pipeline
        try:
            from ext import IMPLEMENTATION as impl
        except ImportError:
            impl = "unavailable"
        info = Info("cityedge_build", "Agent version and filter implementation.")
        info.add_info({"version": __version__, "filters": str(impl)})
        yield info
        yield Gauge(
            "cityedge_ready", "1 once buses are open and READY=1 was sent.", a.ready_at is not None
        )
        yield Gauge(
            "cityedge_uptime_seconds",
            "Seconds since the agent started.",
            self._mono() - a.started_at,
        )
        yield Counter("cityedge_config_reloads", "Reload requests (SIGHUP).", a.reloads)
        yield Counter("cityedge_readings_received", "Readings from drivers.", p.received)
        yield Counter("cityedge_readings_delivered", "Readings accepted by the sinks.", p.delivered)
        yield Counter("cityedge_readings_suppressed", "Readings dropped by filters.", p.suppressed)
        ratio = p.suppressed / p.received if p.received else 0.0
        yield Gauge(
            "cityedge_filter_suppression_ratio",
            "Share of readings suppressed by filters since start (deadband, compression...).",
            ratio,
        )
        if self.timekeeper is not None:
            yield Gauge(
                "cityedge_time_synchronized",
                "1 when the wall clock is believed NTP-synchronised.",
                self.timekeeper.synced,
            )
            yield Counter(
                "cityedge_time_jumps", "Wall-clock steps detected.", self.timekeeper.jumps
            )

    def _devices(self) -> Iterable[Family]:
        lab = ("bus", "device")
        lat = _g("device_poll_latency_seconds", "Duration of the last poll cycle.", lab)
        polls = _c("device_polls", "Completed polls (reads attempted on the wire).", lab)
        reqs = _c("device_requests", "Requests sent.", lab)
        tmo = _c("device_timeouts", "Requests without an answer.", lab)
        exc = _c("device_exceptions", "Protocol exception responses.", lab)
        badf = _c("device_bad_frames", "Corrupt or mismatched frames.", lab)
        over = _c("device_overruns", "Poll ticks skipped: previous poll still running.", lab)
        online = _g("device_online", "1 while the device answers (online or degraded).", lab)
        quar = _g("device_quarantined", "1 while an offline device waits for its probe.", lab)
        state = _g(
            "device_state",
            "1 for the device's state (online, degraded, offline, unknown), 0 for the others.",
            (*lab, "state"),
        )
        reason = _g(
            "device_reason",
            "1 for why a degraded or offline device is so (timeout, refused, reset, no route, "
            "port gone, bad frames, exception, bad value); absent while online.",
            (*lab, "reason"),
        )
        trans = _c("device_transitions", "Changes of device state.", lab)
        excl = _g("device_excluded", "Registers, points or caps the device rejects.", lab)
        last_ts = _g(
            "device_last_success_timestamp_seconds", "Wall time of the last good poll.", lab
        )
        age = _g("device_last_success_age_seconds", "Seconds since the last good poll.", lab)
        now_m, now_w = self._mono(), self._wall()
        for bus_id, drv in self.agent.drivers.items():
            for dev_id, d in drv.stats.devices.items():
                lv = [bus_id, dev_id]
                lat.add_metric(lv, d.last_cycle_s)
                polls.add_metric(lv, d.polls)
                reqs.add_metric(lv, d.requests)
                tmo.add_metric(lv, d.timeouts)
                exc.add_metric(lv, d.exceptions)
                badf.add_metric(lv, d.bad_frames)
                over.add_metric(lv, d.overruns)
                online.add_metric(lv, d.online)
                quar.add_metric(lv, d.state == "offline" and d.quarantined_until > now_m)
                for s in _STATES:
                    state.add_metric([*lv, s], d.state == s)
                if d.reason is not None and d.state in ("degraded", "offline"):
                    reason.add_metric([*lv, d.reason], 1)
                trans.add_metric(lv, d.transitions)
                excl.add_metric(lv, len(d.excluded))
                ok = d.last_success_ms
                last_ts.add_metric(lv, ok / 1000.0 if ok is not None else _NAN)
                age.add_metric(lv, max(0.0, now_w - ok / 1000.0) if ok is not None else _NAN)
        yield from (lat, polls, reqs, tmo, exc, badf, over, online, quar, last_ts, age)
        yield from (state, reason, trans, excl)

    def _buses(self) -> Iterable[Family]:
        busy = _c(
            "bus_busy_seconds", "Time the bus carried our traffic; rate() = utilization.", ["bus"]
        )
        reqs = _c("bus_requests", "Requests sent on the bus.", ["bus"])
        reco = _c("bus_reconnects", "Reconnections after a lost link.", ["bus"])
        conn = _g("bus_connected", "1 while the port/connection is open.", ["bus"])
        util = _g("bus_utilization_ratio", "Busy share of wall time since start.", ["bus"])
        up = max(1e-9, self._mono() - self.agent.started_at)
        devices = _g("bus_devices", "Devices configured on the bus.", ["bus"])
        buses = bus_of(self.agent)
        for bus_id, drv in self.agent.drivers.items():
            st = drv.stats
            busy.add_metric([bus_id], st.busy_s)
            reqs.add_metric([bus_id], st.requests)
            reco.add_metric([bus_id], st.reconnects)
            conn.add_metric([bus_id], st.connected)
            util.add_metric([bus_id], min(1.0, st.busy_s / up))
            devices.add_metric([bus_id], sum(1 for b in buses.values() if b == bus_id))
        yield from (busy, reqs, reco, conn, util, devices)

    def _sinks(self) -> Iterable[Family]:
        lab = ["output"]
        conn = _g("output_connected", "1 while the output's broker link is up.", lab)
        depth = _g("outbox_depth", "Readings waiting in the outbox.", lab)
        oldest = _g("outbox_oldest_age_seconds", "Age of the oldest reading in the outbox.", lab)
        drops = _c("outbox_dropped", "Readings dropped because the outbox was full.", lab)
        size = _g("outbox_bytes", "Bytes of the outbox file in use.", lab)
        budget = _g("outbox_budget_bytes", "Byte budget of the outbox in force.", lab)
        memory = _g("outbox_memory_readings", "Readings held in memory (cannot write).", lab)
        writable = _g("outbox_writable", "0 while the outbox cannot write its file.", lab)
        msgs = _c("published_messages", "Messages acknowledged by the broker/written.", lab)
        rds = _c("published_readings", "Readings in those messages.", lab)
        enc = _c("encode_errors", "Readings the output's encoding could not carry (skipped).", lab)
        for sink in self.agent.sinks:
            s = sink.stats()
            lv = [s.name]
            if s.connected is not None:
                conn.add_metric(lv, s.connected)
            if s.outbox_depth is not None:
                depth.add_metric(lv, s.outbox_depth)
            if s.outbox_oldest_age_s is not None:
                oldest.add_metric(lv, s.outbox_oldest_age_s)
            if s.outbox_dropped is not None:
                drops.add_metric(lv, s.outbox_dropped)
            if s.outbox_bytes is not None:
                size.add_metric(lv, s.outbox_bytes)
                writable.add_metric(lv, s.outbox_fault is None)
            if s.outbox_budget is not None:
                budget.add_metric(lv, s.outbox_budget)
            if s.outbox_memory is not None:
                memory.add_metric(lv, s.outbox_memory)
            if s.messages is not None:
                msgs.add_metric(lv, s.messages)
            if s.readings is not None:
                rds.add_metric(lv, s.readings)
            if s.encode_errors is not None:
                enc.add_metric(lv, s.encode_errors)
        yield from (conn, depth, oldest, drops, size, budget, memory, writable, msgs, rds, enc)


def _process() -> Iterable[Family]:
    f = procstat.sample()
    yield Counter(
        "process_cpu_seconds", "Total user and system CPU time spent in seconds.", f.cpu_seconds
    )
    if f.rss_bytes is not None:
        yield Gauge("process_resident_memory_bytes", "Resident memory size in bytes.", f.rss_bytes)
    if f.vms_bytes is not None:
        yield Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", f.vms_bytes)
    if f.start_time is not None:
        yield Gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            f.start_time,
        )
    if f.open_fds is not None:
        yield Gauge("process_open_fds", "Number of open file descriptors.", f.open_fds)
    yield Gauge("process_max_fds", "Maximum number of open file descriptors.", f.max_fds)


def make_registry(agent: AgentView, timekeeper: TimeKeeper | None = None) -> AgentCollector:
    """The collector the HTTP endpoint renders at every scrape (one per endpoint)."""
    return AgentCollector(agent, timekeeper=timekeeper)


def render(registry: AgentCollector) -> bytes:
    """The text exposition (format 0.0.4) of everything ``registry`` collects."""
    return promtext.render(registry.collect)
