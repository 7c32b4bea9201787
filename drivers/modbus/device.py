"""Per-device state of a Modbus session: cached plans, learned exclusions
(drivers/modbus/exclusions.py) and the compiled decoder of each point, on top of what the bus
owner keeps for every device (``drivers/owner.py``: schedule, health, counters). No I/O here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from drivers.base import DeviceBinding
from drivers.core.profile import Point, WordOrder
from drivers.core.reading import Quality, Reading, Source, TimeQuality, Value
from drivers.device_state import Reason
from drivers.modbus import pdu
from drivers.modbus.codec import CodecError, decode_point, fast_decoder
from drivers.modbus.exclusions import LearnedExclusions
from drivers.modbus.planner import PlanError, ReadRequest, blocked_points, plan_reads
from drivers.polling import Device, HealthOptions, PollResult
from drivers.schedule import Group

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


class DeviceState(Device):
    protocol = "modbus"

    def __init__(
        self,
        binding: DeviceBinding,
        bus_id: str,
        opts: HealthOptions,
        *,
        offline_after_s: float,
        reprobe_min: float = 60.0,
        reprobe_max: float = 3600.0,
    ) -> None:
        super().__init__(binding, bus_id, binding.profile.points, opts, offline_after_s)
        self._compiled: dict[str, _Compiled] = {}
        self.learned = LearnedExclusions(
            f"bus {bus_id} device {binding.id}",
            reprobe_min=reprobe_min,
            reprobe_max=reprobe_max,
            rng=opts.rng,
        )
        self.blocked: dict[str, str] = {}  # point name -> why no plan can read it
        self.rejected_all = False  # the last poll got exception replies to every read
        self._plans: dict[tuple[float, ...], tuple[ReadRequest, ...]] = {}
        self._pdus: dict[tuple[float, ...], tuple[bytes, ...]] = {}  # each plan's request PDUs
        self._plans_version = -1

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

    def request_pdus(self, groups: Sequence[Group]) -> tuple[bytes, ...]:
        """The request PDU of each read of ``plan(groups)``, built once per plan (a poll finds
        its replies in the tick's batch by them)."""
        self.plan(groups)
        return self._pdus[tuple(g.interval for g in groups)]

    def plan(self, groups: Sequence[Group]) -> tuple[ReadRequest, ...]:
        learned = self.learned
        if learned.next_retry is not None:
            learned.release_due()  # re-probe: plan across what was rejected long enough ago
        if self._plans_version != learned.version:
            self._plans.clear()
            self._pdus.clear()
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
            self._pdus[key] = tuple(pdu.read(r.table, r.start, r.count) for r in plan)
            self.stats.unsupported_points = tuple(sorted(learned.points | self.blocked.keys()))
        return plan

    # --- results ------------------------------------------------------------------------------
    def _make_source(self, point: Point) -> Source:
        return Source(
            "modbus", self.bus_id, self.unit, point.table.value, point.address, point.type.value
        )

    def decode(
        self,
        poll: PollResult,
        points: Iterable[Point],
        start: int,
        values: Sequence[int] | Sequence[bool],
        ts: int,
    ) -> None:
        """The readings of ``points`` into ``poll``; a value that does not decode is a point
        fault (BAD, the device degraded)."""
        # the hot path of every poll: per point one compiled decoder and one Reading built
        # from fields fixed at compile time
        out = poll.readings
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
                poll.failing[p.name] = Reason.BAD_VALUE
                continue
            last_good[p.name] = v
            h = c.head
            out.append(
                Reading(h[0], h[1], h[2], h[3], h[4], v, h[5], h[6], ts, _GOOD, None, 0,
                        False, _SYNCED, h[7], c.source)
            )  # fmt: skip

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
        return _Compiled(p.address, p.registers, fast, head, self.source(p))
