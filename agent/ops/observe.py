"""A read-only view of a running Agent, shared by metrics, health and the watchdog.

Everything here is read at scrape/check time from counters the hot path already keeps
(``BusStats``/``DeviceStats`` in drivers/base.py, the Pipeline's counters, the sinks' stats):
observing the agent adds no work per reading.

Every sink reports one typed record, :class:`SinkStats`, from ``stats()`` (the Sink protocol,
agent/forward/sinks/base.py): the MQTT sink fills it from its link and outbox counters, the
JSON-lines sink from what it wrote. A field a sink has nothing for stays ``None`` and is not
reported. (Before issue 20 these were found by trying a table of alias names on whatever
object a sink exposed.)

``last_progress`` is a ``time.monotonic()`` timestamp a sink may refresh whenever its loop
does useful work; the watchdog prefers it to guessing from counters.
"""

from __future__ import annotations

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
    def sinks(self) -> Sequence[ObservedSink]: ...
    @property
    def bindings(self) -> Sequence[DeviceBinding]: ...
    @property
    def started_at(self) -> float: ...
    @property
    def ready_at(self) -> float | None: ...
    @property
    def reloads(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkStats:
    """What a sink reports to metrics, /health, the watchdog and ``cityedge status``."""

    name: str
    kind: str  # the sink's class name, e.g. "MqttSink", "JsonLinesSink"
    connected: bool | None = None  # None: not a networked sink
    broker: str | None = None
    messages: int | None = None  # published (PUBACKed) or written
    readings: int | None = None  # readings in those messages
    last_progress: float | None = None  # monotonic
    last_error: str | None = None
    encode_errors: int | None = None  # readings the encoding could not carry (skipped)
    outbox_depth: int | None = None  # None: no outbox
    outbox_oldest_age_s: float | None = None
    outbox_dropped: int | None = None
    outbox_bytes: int | None = None  # live bytes of the outbox file
    outbox_budget: int | None = None  # byte budget in force
    outbox_memory: int | None = None  # readings held in memory (nothing can be written)
    outbox_fault: str | None = None  # why nothing can be written (failing)
    outbox_alarms: tuple[str, ...] = ()  # dropping, damaged file set aside (degraded)

    @property
    def has_outbox(self) -> bool:
        return self.outbox_depth is not None


class ObservedSink(Protocol):
    """What observers need of a sink (every ``agent.forward.sinks.base.Sink`` has it)."""

    name: str

    def stats(self) -> SinkStats: ...


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
