"""A stand-in for ``agent.runtime.Agent`` exposing only what observers read (AgentView)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

from agent.ops.alarms import Alarms
from agent.ops.observe import SinkStats
from drivers.base import BusStats, DeviceStats


@dataclass
class FakeDriver:
    stats: BusStats


@dataclass
class FakePipeline:
    received: int = 0
    delivered: int = 0
    suppressed: int = 0
    last_emit: float = 0.0
    last_values: dict[Any, Any] = field(default_factory=dict)
    time_mark: Any = None


@dataclass
class Counters:
    """What a test sets; ``FakeSink.stats()`` reports it as the typed record."""

    connected: bool = True
    broker: str | None = "mqtts://broker.example:8883"
    outbox_depth: int = 0
    outbox_oldest_age_s: float | None = 0.0
    outbox_dropped: int = 0
    messages: int = 0
    readings: int = 0
    last_progress: float | None = None
    last_error: str | None = None


@dataclass
class FakeSink:
    name: str
    counters: Counters = field(default_factory=Counters)

    def stats(self) -> SinkStats:
        return SinkStats(name=self.name, kind=type(self).__name__, **asdict(self.counters))


class FakeAgent:
    def __init__(self, layout: dict[str, dict[str, float]], now: float = 1000.0) -> None:
        """layout: bus id -> {device id: poll interval}."""
        self.drivers = {}
        self.reload_listeners: list[Any] = []
        self.bindings: list[Any] = []
        for bus, devs in layout.items():
            st = BusStats(connected=True)
            for dev, iv in devs.items():
                st.devices[dev] = DeviceStats(online=True, state="online")
                self.bindings.append(
                    SimpleNamespace(id=dev, device=SimpleNamespace(id=dev, bus=bus, interval=iv))
                )
            self.drivers[bus] = FakeDriver(st)
        self.pipeline = FakePipeline()
        self.sinks: list[Any] = []
        self.started_at = now
        self.ready_at: float | None = now + 1
        self.reloads = 0
        self.services: list[Any] = []
        self.router: Any = None  # no command router (commands disabled)
        self.loaded: Any = None  # set by tests that need a config
        self.last_reload: Any = None
        self.alarms = Alarms()

    def dev(self, bus: str, dev: str) -> DeviceStats:
        return self.drivers[bus].stats.devices[dev]


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt
