"""Per-device state the bus owner keeps: interval groups, cached plans, learned exclusions,
last good values, counters and quarantine backoff. No I/O here."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agent.config.profile import Point, Table, WordOrder
from agent.reading import Quality, Reading, Source, TimeQuality, Value
from drivers.base import DeviceBinding, DeviceStats, point_reading
from drivers.modbus.codec import CodecError, decode_point, fast_decoder
from drivers.modbus.planner import PlanError, ReadRequest, plan_reads
from drivers.modbus.schedule import Backoff, first_aligned_tick, next_tick

log = logging.getLogger(__name__)

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
    ) -> None:
        self.binding = binding
        self.bus_id = bus_id
        self.unit = binding.device.unit_id
        self.stats = DeviceStats()
        self._sources: dict[str, Source] = {}
        self._compiled: dict[str, _Compiled] = {}
        self.backoff = Backoff(quarantine_min, max(quarantine_min, quarantine_max), rng=rng)
        self.excluded: set[tuple[Table, int]] = set()
        self.unsupported: dict[str, str] = {}  # point name -> reason
        self.last_good: dict[str, Value] = {}
        self._plans: dict[tuple[float, ...], tuple[ReadRequest, ...]] = {}
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
        return [p for g in groups for p in g.points if p.name not in self.unsupported]

    def plan(self, groups: Sequence[Group]) -> tuple[ReadRequest, ...]:
        key = tuple(g.interval for g in groups)
        if key not in self._plans:
            limits = self.binding.profile.limits
            while True:
                try:
                    self._plans[key] = plan_reads(
                        self.live_points(groups), limits, excluded=frozenset(self.excluded)
                    )
                    break
                except PlanError as exc:  # the point lies on registers we learned to avoid
                    self.mark_unsupported(exc.point, exc.reason, replan=False)
        return self._plans[key]

    def mark_unsupported(self, name: str, reason: str, *, replan: bool = True) -> None:
        if name in self.unsupported:
            return
        self.unsupported[name] = reason
        self.stats.unsupported_points = tuple(sorted(self.unsupported))
        log.warning(
            "bus %s device %s: point %s is unsupported by the device (%s); no longer polled",
            self.bus_id,
            self.binding.id,
            name,
            reason,
        )
        try:
            p = self.binding.profile.point(name)
        except KeyError:
            p = None
        if p is not None:
            self.excluded.update((p.table, a) for a in range(p.address, p.address + p.registers))
        if replan:
            self._plans.clear()

    def exclude(self, table: Table, start: int, end: int) -> None:
        """Never read across ``start..end-1`` again (a gap the device rejects)."""
        if end <= start:
            return
        log.warning(
            "bus %s device %s: %s registers %d..%d rejected inside a span; "
            "reads will no longer bridge them",
            self.bus_id,
            self.binding.id,
            table.value,
            start,
            end - 1,
        )
        self.excluded.update((table, a) for a in range(start, end))
        self._plans.clear()

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
