"""The JSON health document (GET /health, ``cityedge status``).

``status`` is the worst of the verdicts below, each with a one-line reason a technician can act
on:

- ``failing`` — the agent is not doing its job: not ready 60 s after start; every configured
  device offline; the watchdog has stopped feeding systemd; an outbox is dropping readings
  (full) while its link is down; an outbox cannot write its file (readings kept in memory).
- ``degraded`` — working, with a problem: some devices offline (each with its reason) or
  degraded (points the device rejects or that do not decode); a bus disconnected; an output
  disconnected (readings are buffered); the last config reload was refused; the wall clock is
  not synchronised; an outbox is dropping its oldest readings, or set a damaged file aside;
  an auxiliary service is down (an alarm: e.g. the metrics port is held by another process,
  agent/ops/alarms.py).

Each device shows its state as drivers/device_state.py decided it (``unknown`` before its
first poll, ``online``, ``degraded``, ``offline``), the reason and since when, the next probe
of an offline device, and what it was found to reject (re-probed later).
- ``ok`` — none of the above.

The HTTP endpoint answers 200 for ok/degraded and 503 for failing, so a plain HTTP check works.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.ops.observe import AgentView, SinkStats, bus_of
from drivers.core.reading import iso_ms

if TYPE_CHECKING:
    from agent.ops.alarms import Alarms
    from agent.ops.timesync import TimeKeeper
    from agent.ops.watchdog import ProgressWatchdog
    from drivers.base import DeviceStats

OK, DEGRADED, FAILING = "ok", "degraded", "failing"
_RANK = {OK: 0, DEGRADED: 1, FAILING: 2}
READY_DEADLINE_S = 60.0


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    message: str  # "applied: 2 device(s) restarted" / "refused: devices[3].unit_id: ..."
    at_ms: int  # wall clock, epoch ms

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "message": self.message, "at": iso_ms(self.at_ms)}


class HealthReport:
    """Builds the document; holds what the Agent itself does not keep (last reload result)."""

    def __init__(
        self,
        agent: AgentView,
        *,
        gateway_id: str | None = None,
        timekeeper: TimeKeeper | None = None,
        watchdog: ProgressWatchdog | None = None,
        alarms: Alarms | None = None,
        mono: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.alarms = alarms
        self.gateway_id = gateway_id
        self.timekeeper = timekeeper
        self.watchdog = watchdog
        self.last_reload: ReloadResult | None = None
        self._mono = mono
        self._wall = wall

    def note_reload(self, ok: bool, message: str) -> None:
        """Record the outcome of a reload (call from the reload handler, good or bad)."""
        self.last_reload = ReloadResult(ok, message, int(self._wall() * 1000))

    def document(self) -> dict[str, Any]:
        a = self.agent
        now_m, now_w = self._mono(), self._wall()
        verdicts: list[tuple[str, str]] = []

        devices: dict[str, dict[str, Any]] = {}
        buses = bus_of(a)
        stats = {dev_id: d for drv in a.drivers.values() for dev_id, d in drv.stats.devices.items()}
        for dev_id, bus_id in buses.items():
            d = stats.get(dev_id)
            entry: dict[str, Any] = {"bus": bus_id}
            if d is None:
                entry["status"] = "unknown"
            else:
                entry.update(device_entry(d, now_m, now_w))
            devices[dev_id] = entry
        down = sorted(k for k, v in devices.items() if v["status"] == "offline")
        if devices and len(down) == len(devices) and a.ready_at is not None:
            verdicts.append((FAILING, f"all {len(devices)} device(s) offline"))
        elif down:
            verdicts.append((DEGRADED, f"{len(down)} device(s) offline: {_why(devices, down)}"))
        weak = sorted(k for k, v in devices.items() if v["status"] == "degraded")
        if weak:
            verdicts.append((DEGRADED, f"{len(weak)} device(s) degraded: {_why(devices, weak)}"))

        bus_doc: dict[str, dict[str, Any]] = {}
        for bus_id, drv in a.drivers.items():
            st = drv.stats
            bus_doc[bus_id] = {
                "connected": st.connected,
                "requests": st.requests,
                "reconnects": st.reconnects,
            }
            if not st.connected and a.ready_at is not None:
                verdicts.append((DEGRADED, f"bus {bus_id} not connected"))

        outputs: dict[str, dict[str, Any]] = {}
        for sink in a.sinks:
            s = sink.stats()
            o: dict[str, Any] = {"type": s.kind}
            if s.connected is not None:
                o["connected"] = s.connected
            if s.broker is not None:
                o["broker"] = s.broker
            if s.has_outbox:
                o["outbox"] = {
                    "depth": s.outbox_depth,
                    "oldest_age_s": s.outbox_oldest_age_s,
                    "dropped": s.outbox_dropped,
                }
                o["outbox"].update(_outbox_extra(s))
                if s.outbox_fault:
                    verdicts.append((FAILING, f"output {s.name}: {s.outbox_fault}"))
                verdicts += [(DEGRADED, f"output {s.name}: {a}") for a in s.outbox_alarms]
            if s.messages is not None:
                o["published_messages"] = s.messages
            if s.readings is not None:
                o["published_readings"] = s.readings
            if s.last_error:
                o["last_error"] = s.last_error
            outputs[s.name] = o
            if s.connected is False:
                if s.outbox_dropped:
                    verdicts.append(
                        (FAILING, f"output {s.name}: link down and outbox full (dropping)")
                    )
                else:
                    verdicts.append((DEGRADED, f"output {s.name}: link down, buffering"))

        if a.ready_at is None and now_m - a.started_at > READY_DEADLINE_S:
            verdicts.append((FAILING, f"not ready {now_m - a.started_at:.0f} s after start"))
        if self.watchdog is not None and self.watchdog.last_reason:
            verdicts.append((FAILING, f"watchdog: {self.watchdog.last_reason}"))
        if self.last_reload is not None and not self.last_reload.ok:
            verdicts.append((DEGRADED, f"last config reload refused: {self.last_reload.message}"))
        alarms = self.alarms.active() if self.alarms is not None else ()
        verdicts += [(DEGRADED, str(a)) for a in alarms]
        clock: dict[str, object] = {}
        if self.timekeeper is not None:
            clock = self.timekeeper.snapshot()
            if not self.timekeeper.synced:
                verdicts.append((DEGRADED, "wall clock not synchronised (timestamps flagged)"))

        status = max((v for v, _ in verdicts), key=_RANK.__getitem__, default=OK)
        p = a.pipeline
        return {
            "status": status,
            "reasons": [r for _, r in sorted(verdicts, key=lambda v: -_RANK[v[0]])],
            "gateway": self.gateway_id,
            "version": __version__,
            "time": iso_ms(int(now_w * 1000)),
            "uptime_s": round(now_m - a.started_at, 1),
            "ready": a.ready_at is not None,
            "devices": devices,
            "buses": bus_doc,
            "outputs": outputs,
            "pipeline": {
                "received": p.received,
                "delivered": p.delivered,
                "suppressed": p.suppressed,
                "last_emit_age_s": round(now_m - p.last_emit, 1) if p.last_emit else None,
            },
            "reload": {
                "count": a.reloads,
                "last": self.last_reload.to_dict() if self.last_reload else None,
            },
            "clock": clock,
            "alarms": [a.to_dict() for a in alarms],
        }


def device_entry(d: DeviceStats, now_m: float, now_w: float) -> dict[str, Any]:
    """One device's part of the health document (also the MQTT health message's)."""
    entry: dict[str, Any] = {"status": d.state}
    if d.reason is not None:
        entry["reason"] = d.reason
    if d.detail is not None:
        entry["detail"] = d.detail
    if d.state_since_ms is not None:
        entry["since"] = iso_ms(d.state_since_ms)
    if d.state == "offline" and d.quarantined_until > now_m:
        entry["next_probe_s"] = round(d.quarantined_until - now_m, 1)
    entry.update(
        polls=d.polls,
        timeouts=d.timeouts,
        exceptions=d.exceptions,
        bad_frames=d.bad_frames,
        transitions=d.transitions,
    )
    entry["last_poll_s"] = round(d.last_cycle_s, 4)
    if d.last_success_ms is not None:
        entry["last_success"] = iso_ms(d.last_success_ms)
        entry["last_success_age_s"] = round(now_w - d.last_success_ms / 1000, 1)
    if d.excluded:
        entry["excluded"] = [
            {
                "what": x.what,
                "reason": x.reason,
                "since": iso_ms(x.since_ms),
                "retry_in_s": round(max(0.0, x.retry_at - now_m), 1),
            }
            for x in d.excluded
        ]
    return entry


def _why(devices: dict[str, dict[str, Any]], ids: list[str]) -> str:
    return ", ".join(
        f"{k} ({devices[k]['reason']})" if devices[k].get("reason") else k for k in ids
    )


def _outbox_extra(s: SinkStats) -> dict[str, Any]:
    """Storage figures of an outbox, when the sink reports them (agent/forward/outbox.py)."""
    extra: dict[str, Any] = {}
    if s.outbox_bytes is not None:
        extra["bytes"] = s.outbox_bytes
    if s.outbox_budget is not None:
        extra["budget_bytes"] = s.outbox_budget
    if s.outbox_memory:
        extra["in_memory"] = s.outbox_memory
    if s.outbox_fault:
        extra["fault"] = s.outbox_fault
    if s.outbox_alarms:
        extra["alarms"] = list(s.outbox_alarms)
    return extra
