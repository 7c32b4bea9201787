"""What the bus owner keeps per device, on every bus kind, and what one poll came to.

``Device`` holds the schedule (``drivers/schedule.py``), the health (``drivers/device_state.py``),
the counters and the last good values, and builds the device's readings; each protocol's
session adds its own state (``drivers/modbus/device.py``, ``drivers/serial/session.py``).
``PollResult`` is what a session's poll hands back to the bus owner (``drivers/owner.py``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from drivers.base import DeviceBinding, DeviceStats, point_reading
from drivers.core.profile import Point
from drivers.core.reading import Quality, Reading, Source, Value
from drivers.device_state import DeviceHealth, Reason
from drivers.schedule import Group, Schedule


@dataclass(frozen=True, slots=True)
class HealthOptions:
    """The bus owner's settings every device's ``DeviceHealth`` gets."""

    quarantine_min: float
    quarantine_max: float
    rng: random.Random
    clock: Callable[[], float]
    wall_ms: Callable[[], int]


class Device:
    """What the bus owner keeps per device on every bus kind: schedule, health, counters,
    last good values; the sessions add their protocol's state."""

    protocol = "?"  # Source.protocol of its readings

    def __init__(
        self,
        binding: DeviceBinding,
        bus_id: str,
        points: Iterable[Point],
        opts: HealthOptions,
        offline_after_s: float,
    ) -> None:
        self.binding = binding
        self.bus_id = bus_id
        self.unit = binding.device.unit_id
        self.stats = DeviceStats()
        self.health = DeviceHealth(
            binding.id,
            bus_id,
            self.stats,
            offline_after_s=offline_after_s,
            probe_min=opts.quarantine_min,
            probe_max=opts.quarantine_max,
            rng=opts.rng,
            clock=opts.clock,
            wall_ms=opts.wall_ms,
        )
        self.schedule = Schedule(points, binding.device.interval)
        self.last_good: dict[str, Value] = {}
        self._sources: dict[str, Source] = {}

    @property
    def due(self) -> float:
        return self.schedule.due

    def live_points(self, groups: Sequence[Group]) -> list[Point]:
        """The points a poll of ``groups`` reads (and reports STALE while offline)."""
        return [p for g in groups for p in g.points]

    @property
    def excluded_points(self) -> int:
        """Points not polled because the device rejects them (degraded while any)."""
        return 0

    def source(self, point: Point) -> Source:
        s = self._sources.get(point.name)
        if s is None:  # one immutable Source per point, shared by all its readings
            s = self._sources[point.name] = self._make_source(point)
        return s

    def _make_source(self, point: Point) -> Source:
        return Source(self.protocol, self.bus_id, self.unit, raw_type=point.type.value)

    def reading(
        self,
        point: Point,
        value: Value,
        ts: int,
        quality: Quality = Quality.GOOD,
        reason: str | None = None,
    ) -> Reading:
        return point_reading(self.binding, point, value, ts, self.source(point), quality, reason)

    def bad(self, points: Iterable[Point], ts: int, reason: str) -> list[Reading]:
        return [self.reading(p, None, ts, Quality.BAD, reason) for p in points]

    def stale(self, points: Iterable[Point], ts: int, reason: str) -> list[Reading]:
        return [
            self.reading(p, self.last_good.get(p.name), ts, Quality.STALE, reason) for p in points
        ]


class PollResult:
    """What one poll of one device came to."""

    __slots__ = ("answered", "failing", "failure", "readings")

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.answered = 0  # requests the device answered with data
        self.failure: tuple[Reason, str | None] | None = None  # the first failure
        self.failing: dict[str, Reason] = {}  # points failing for a reason of the device's

    def fail(self, kind: Reason, detail: str | None) -> None:
        if self.failure is None:
            self.failure = (kind, detail)

    def add(self, readings: list[Reading]) -> None:
        """Decoded readings; a value that does not decode is a point fault (degraded)."""
        for r in readings:
            if r.quality is Quality.BAD:
                self.failing[r.point] = Reason.BAD_VALUE
        self.readings += readings
