"""Per-device state the bus owner keeps: interval groups, cached plans, learned exclusions
(drivers/modbus/exclusions.py), last good values, counters and the device's health
(drivers/device_state.py). No I/O here."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from drivers.base import DeviceBinding, DeviceStats, point_reading
from drivers.core.profile import Point, WordOrder
from drivers.core.reading import Quality, Reading, Source, TimeQuality, Value
from drivers.device_state import DeviceHealth
from drivers.modbus.codec import CodecError, decode_point, fast_decoder
from drivers.modbus.exclusions import LearnedExclusions
from drivers.modbus.planner import PlanError, ReadRequest, blocked_points, plan_reads
from drivers.modbus.schedule import first_aligned_tick, next_tick

DUE_SLACK = 0.005  # groups falling due within this many seconds are read in the same poll


@dataclass
class Group:
    """Points sharing one poll interval (the device's, or a point's own ``interval``)."""

    interval: float
    points: tuple[Point, ...]
    due: float = 0.0
    first_tick: float | None = None  # the aligned grid's first tick, until the first poll ends


_GOOD = Quality.GOOD
_SYNCED = TimeQuality.SYNCED


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One point's decode step, fixed for the life of the bus owner (a reload rebuilds it)."""

    address: int
    width: int
    decode: Callable[[Sequence[int] | Sequence[bool]], Value]
    head: tuple[str, str, str, str, str, str | None, str | None, str | None]
    source: Source


class DeviceState:
    def __init__(
        self,
        binding: DeviceBinding,
        bus_id: str,
        *,
        quarantine_min: float,
        quarantine_max: float,
        rng: random.Random,
        offline_after_s: float | None = None,
        reprobe_min: float = 60.0,
        reprobe_max: float = 3600.0,
    ) -> None:
        self.binding = binding
        self.bus_id = bus_id
        self.unit = binding.device.unit_id
        self.stats = DeviceStats()
        self._sources: dict[str, Source] = {}
        self._compiled: dict[str, _Compiled] = {}
        self.health = DeviceHealth(
            binding.id,
            bus_id,
            self.stats,
            offline_after_s=offline_after_s,
            probe_min=quarantine_min,
            probe_max=quarantine_max,
            rng=rng,
        )
        self.learned = LearnedExclusions(
            f"bus {bus_id} device {binding.id}",
            reprobe_min=reprobe_min,
            reprobe_max=reprobe_max,
            rng=rng,
        )
        self.blocked: dict[str, str] = {}  # point name -> why no plan can read it
        self.rejected_all = False  # the last poll got exception replies to every read
        self.last_good: dict[str, Value] = {}
        self._plans: dict[tuple[float, ...], tuple[ReadRequest, ...]] = {}
        self._plans_version = -1
        by_interval: dict[float, list[Point]] = {}
        for p in binding.profile.points:
            by_interval.setdefault(p.interval or binding.device.interval, []).append(p)
        self.groups = [Group(i, tuple(ps)) for i, ps in sorted(by_interval.items())]
        self.due = math.inf  # earliest due time of its groups (loop time)

    # --- schedule ---------------------------------------------------------------------------
    def start(self, now: float, wall: float | None = None) -> None:
        """First poll now. With ``wall`` (the wall clock at ``now``) the following ones fall on
        wall-clock multiples of each interval, like Telegraf's ``round_interval``: every device
        and bus with one interval polls in the same time slot, so the readings of one cycle carry
        neighbouring timestamps on every bus and reach the outbox in one group commit."""
        for g in self.groups:
            g.due = now
            g.first_tick = None if wall is None else first_aligned_tick(now, wall, g.interval)
        self.due = min((g.due for g in self.groups), default=math.inf)

    def due_groups(self, now: float) -> list[Group]:
        return [g for g in self.groups if g.due <= now + DUE_SLACK]

    def advance(self, groups: Iterable[Group], now: float) -> None:
        for g in groups:
            if g.first_tick is not None:  # onto the aligned grid after the first poll
                g.due, g.first_tick = g.first_tick - g.interval, None
            g.due, skipped = next_tick(g.due, g.interval, now)
            self.stats.overruns += skipped
        # kept as a plain attribute: the bus owner compares it for every device on every step
        self.due = min((g.due for g in self.groups), default=math.inf)

    # --- plan ---------------------------------------------------------------------------------
    def order(self, point: Point) -> WordOrder:
        return point.order or self.binding.profile.word_order

    def live_points(self, groups: Sequence[Group]) -> list[Point]:
        skip = self.learned.points
        blocked = self.blocked
        return [p for g in groups for p in g.points if p.name not in skip and p.name not in blocked]

    @property
    def excluded_points(self) -> int:
        """Points not polled because the device rejects them (degraded while any)."""
        return len(self.stats.unsupported_points)

    def plan(self, groups: Sequence[Group]) -> tuple[ReadRequest, ...]:
        learned = self.learned
        if learned.next_retry is not None:
            learned.release_due()  # re-probe: plan across what was rejected long enough ago
        if self._plans_version != learned.version:
            self._plans.clear()
            self.blocked.clear()
            self._plans_version = learned.version
            self.stats.excluded = learned.describe()
        key = tuple(g.interval for g in groups)
        plan = self._plans.get(key)
        if plan is None:
            limits = learned.limits(self.binding.profile.limits)
            excluded = learned.registers
            points = self.live_points(groups)
            # a point on registers the device rejects (or wider than a learned cap) is left out
            # until the re-probe releases them
            for p in blocked_points(points, limits, excluded=excluded):
                self.blocked[p.name] = "on registers the device rejects"
            points = [p for p in points if p.name not in self.blocked]
            try:
                plan = plan_reads(points, limits, excluded=excluded)
            except PlanError as exc:  # blocked_points covers every reason; kept as a guard
                self.blocked[exc.point] = exc.reason
                plan = plan_reads(
                    [p for p in points if p.name not in self.blocked], limits, excluded=excluded
                )
            self._plans[key] = plan
            self.stats.unsupported_points = tuple(sorted(learned.points | self.blocked.keys()))
        return plan

    # --- results ------------------------------------------------------------------------------
    def reading(
        self,
        point: Point,
        value: Value,
        ts: int,
        quality: Quality = Quality.GOOD,
        reason: str | None = None,
    ) -> Reading:
        return point_reading(self.binding, point, value, ts, self._source(point), quality, reason)

    def _source(self, point: Point) -> Source:
        source = self._sources.get(point.name)
        if source is None:  # one immutable Source per point, shared by all its readings
            source = Source(
                "modbus",
                self.bus_id,
                self.unit,
                point.table.value,
                point.address,
                point.type.value,
            )
            self._sources[point.name] = source
        return source

    def decode(
        self, points: Iterable[Point], start: int, values: Sequence[int] | Sequence[bool], ts: int
    ) -> list[Reading]:
        # the hot path of every poll: per point one compiled decoder and one Reading built
        # from fields fixed at compile time
        out: list[Reading] = []
        compiled = self._compiled
        last_good = self.last_good
        for p in points:
            c = compiled.get(p.name)
            if c is None:
                c = compiled[p.name] = self._compile(p)
            off = c.address - start
            try:
                v = c.decode(values[off : off + c.width])
            except CodecError as exc:
                out.append(self.reading(p, None, ts, Quality.BAD, exc.reason))
                continue
            last_good[p.name] = v
            h = c.head
            out.append(
                Reading(h[0], h[1], h[2], h[3], h[4], v, h[5], h[6], ts, _GOOD, None, 0,
                        False, _SYNCED, h[7], c.source)
            )  # fmt: skip
        return out

    def _compile(self, p: Point) -> _Compiled:
        order = self.order(p)
        fast = fast_decoder(p, order)
        if fast is None:

            def fast(words: Sequence[int] | Sequence[bool]) -> Value:
                return decode_point(p, words, order)

        b = self.binding
        head = (
            b.gateway_id,
            b.id,
            b.profile.kind,
            p.name,
            p.metric_name,
            p.unit,
            p.unit_code,
            b.device.entity_id,
        )
        return _Compiled(p.address, p.registers, fast, head, self._source(p))

    def bad(self, points: Iterable[Point], ts: int, reason: str) -> list[Reading]:
        return [self.reading(p, None, ts, Quality.BAD, reason) for p in points]

    def stale(self, points: Iterable[Point], ts: int, reason: str) -> list[Reading]:
        return [
            self.reading(p, self.last_good.get(p.name), ts, Quality.STALE, reason) for p in points
        ]
