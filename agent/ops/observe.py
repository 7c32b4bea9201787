"""A read-only view of a running Agent, shared by metrics, health and the watchdog.

Everything here is read at scrape/check time from counters the hot path already keeps
(``BusStats``/``DeviceStats`` in drivers/base.py, the Pipeline's counters, the sinks' stats):
observing the agent adds no work per reading.

Sink statistics are duck-typed because sinks differ. ``sink.stats`` may be an object or a
method returning one (``MqttSink.stats() -> MqttSinkStats``); its ``link`` and ``outbox``
members (``LinkStats``, ``OutboxStats``) are searched too. For each field below the first
attribute found on those objects (or, failing that, on the sink itself) is used; a missing one
is simply not reported:

====================  =========================================================  ==========
field                 attribute names tried, in order                            type
====================  =========================================================  ==========
connected             connected, link_up                                         bool
broker                broker, broker_url                                         str
outbox_depth          outbox_depth, depth, pending                               int
outbox_oldest_age_s   outbox_oldest_age_s, oldest_age_s                          float (s)
outbox_oldest_ms      outbox_oldest_ms, oldest_ms                                int (epoch)
outbox_dropped        outbox_dropped, dropped, drops                             int
outbox_bytes          outbox_bytes, bytes                                        int
outbox_budget         outbox_budget, budget                                      int
outbox_memory         outbox_memory, memory                                      int
outbox_fault          outbox_fault, fault                                        str
outbox_alarms         outbox_alarms, alarms                                      tuple[str]
messages              published_messages, messages_published, messages           int
readings              published_readings, readings_published, readings, written  int
last_progress         last_progress, last_puback                                 float
last_error            last_error                                                 str
====================  =========================================================  ==========

``last_progress`` is a ``time.monotonic()`` timestamp the publisher refreshes whenever its loop
does useful work (a PUBACK, an idle pass over an empty outbox, a connection attempt); the
watchdog prefers it to guessing from counters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from drivers.base import BusStats, DeviceBinding
from drivers.core.reading import Reading


class _HasBusStats(Protocol):
    @property
    def stats(self) -> BusStats: ...


class PipelineView(Protocol):
    @property
    def received(self) -> int: ...
    @property
    def delivered(self) -> int: ...
    @property
    def suppressed(self) -> int: ...
    @property
    def last_emit(self) -> float: ...
    @property
    def last_values(self) -> Mapping[tuple[str, str], Reading]: ...


class AgentView(Protocol):
    """What observers need from ``agent.runtime.Agent`` (which satisfies it as is)."""

    @property
    def drivers(self) -> Mapping[str, _HasBusStats]: ...
    @property
    def pipeline(self) -> PipelineView: ...
    @property
    def sinks(self) -> Sequence[object]: ...
    @property
    def bindings(self) -> Sequence[DeviceBinding]: ...
    @property
    def started_at(self) -> float: ...
    @property
    def ready_at(self) -> float | None: ...
    @property
    def reloads(self) -> int: ...


_FIELDS: dict[str, tuple[str, ...]] = {
    "connected": ("connected", "link_up"),
    "broker": ("broker", "broker_url"),
    "outbox_depth": ("outbox_depth", "depth", "pending"),
    "outbox_oldest_age_s": ("outbox_oldest_age_s", "oldest_age_s"),
    "outbox_oldest_ms": ("outbox_oldest_ms", "oldest_ms"),
    "outbox_dropped": ("outbox_dropped", "dropped", "drops"),
    "outbox_bytes": ("outbox_bytes", "bytes"),
    "outbox_budget": ("outbox_budget", "budget"),
    "outbox_memory": ("outbox_memory", "memory"),
    "outbox_fault": ("outbox_fault", "fault"),
    "outbox_alarms": ("outbox_alarms", "alarms"),
    "messages": ("published_messages", "messages_published", "messages"),
    "readings": ("published_readings", "readings_published", "readings", "written"),
    "last_progress": ("last_progress", "last_puback"),
    "last_error": ("last_error",),
    "encode_errors": ("encode_errors",),
}


def _pick(objs: Sequence[object], names: tuple[str, ...]) -> object:
    for obj in objs:
        for n in names:
            v = getattr(obj, n, None)
            if v is not None and not callable(v):
                return v
    return None


def _num(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True, slots=True)
class SinkSnapshot:
    name: str
    kind: str  # the sink's class name, e.g. "MqttSink", "JsonLinesSink"
    connected: bool | None  # None: not a networked sink (or it does not say)
    broker: str | None
    outbox_depth: int | None
    outbox_oldest_age_s: float | None
    outbox_dropped: int | None
    messages: int | None
    readings: int | None
    last_progress: float | None  # monotonic
    last_error: str | None
    outbox_bytes: int | None = None  # live bytes of the outbox file
    outbox_budget: int | None = None  # byte budget in force
    outbox_memory: int | None = None  # readings held in memory (nothing can be written)
    outbox_fault: str | None = None  # why nothing can be written (failing)
    outbox_alarms: tuple[str, ...] = ()  # dropping, damaged file set aside (degraded)
    encode_errors: int | None = None  # readings the encoding could not carry (skipped)

    @property
    def has_outbox(self) -> bool:
        return self.outbox_depth is not None


def sink_snapshot(sink: object, now_wall_ms: int) -> SinkSnapshot:
    """Read a sink's statistics defensively (see the table in the module docstring)."""
    stats = getattr(sink, "stats", None)
    if callable(stats):  # MqttSink.stats() builds a snapshot on demand
        stats = stats()
    objs: list[object] = []
    if stats is not None:
        objs.append(stats)
        objs += [o for n in _NESTED if (o := getattr(stats, n, None)) is not None]
    objs.append(sink)
    raw = {k: _pick(objs, names) for k, names in _FIELDS.items()}
    age = _num(raw["outbox_oldest_age_s"])
    oldest_ms = _num(raw["outbox_oldest_ms"])
    if age is None and oldest_ms is not None:
        age = max(0.0, (now_wall_ms - oldest_ms) / 1000.0)
    depth = _num(raw["outbox_depth"])
    if depth == 0:
        age = 0.0
    connected = raw["connected"]
    alarms = raw["outbox_alarms"]
    ints = {k: (int(v) if (v := _num(raw[k])) is not None else None) for k in _INT_FIELDS}
    return SinkSnapshot(
        name=str(getattr(sink, "name", type(sink).__name__)),
        kind=type(sink).__name__,
        connected=connected if isinstance(connected, bool) else None,
        broker=str(raw["broker"]) if raw["broker"] is not None else None,
        outbox_depth=ints["outbox_depth"],
        outbox_oldest_age_s=age,
        outbox_dropped=ints["outbox_dropped"],
        messages=ints["messages"],
        readings=ints["readings"],
        last_progress=_num(raw["last_progress"]),
        last_error=str(raw["last_error"]) if raw["last_error"] else None,
        outbox_bytes=ints["outbox_bytes"],
        outbox_budget=ints["outbox_budget"],
        outbox_memory=ints["outbox_memory"],
        outbox_fault=str(raw["outbox_fault"]) if raw["outbox_fault"] else None,
        encode_errors=ints["encode_errors"],
        outbox_alarms=tuple(str(a) for a in alarms) if isinstance(alarms, tuple) else (),
    )


_INT_FIELDS = (
    "outbox_depth",
    "outbox_dropped",
    "messages",
    "readings",
    "outbox_bytes",
    "outbox_budget",
    "outbox_memory",
    "encode_errors",
)
_NESTED = ("link", "outbox")  # MqttSinkStats(name, link: LinkStats, outbox: OutboxStats)


def bus_of(agent: AgentView) -> dict[str, str]:
    """device id -> bus id for every enabled device."""
    return {b.id: b.device.bus for b in agent.bindings}


def bus_intervals(agent: AgentView) -> dict[str, float]:
    """bus id -> the shortest poll interval of its devices (how often the bus must move)."""
    out: dict[str, float] = {}
    for b in agent.bindings:
        iv = b.device.interval
        out[b.device.bus] = min(out.get(b.device.bus, iv), iv)
    return out
