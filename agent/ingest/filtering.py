"""Run a device's filter chains over each poll batch: the bridge between Readings and ext.Bank.

Each point with a non-empty chain gets a slot in one ``Bank`` per device; ``apply`` packs the
batch's numeric samples into typed arrays, makes one kernel call and rebuilds only the
Readings a filter changed. The kernels are documented in docs/FILTERS.md.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import ext
from drivers.base import DeviceBinding
from drivers.core.filters import (
    DeadbandFilter,
    FilterSpec,
    RangeFilter,
    RateFilter,
    SmoothFilter,
    SpikeFilter,
    SwingingDoorFilter,
    TotalizerFilter,
)
from drivers.core.profile import Point
from drivers.core.reading import Quality, Reading
from drivers.core.resolution import Rounder, filter_rounder

_Q_CODE = {Quality.GOOD: ext.Q_GOOD, Quality.BAD: ext.Q_BAD, Quality.STALE: ext.Q_STALE}
_Q_OF = {ext.Q_GOOD: Quality.GOOD, ext.Q_BAD: Quality.BAD, ext.Q_STALE: Quality.STALE}
_TOTAL_OUT = {"total": 0.0, "delta": 1.0, "rate": 2.0}
_pack = struct.Struct("d").pack

Step = tuple[int, tuple[float, ...]]


def compile_step(spec: FilterSpec, point: Point) -> Step:
    """One spec as ``(opcode, params)`` for ``ext.Bank`` (see ext/_common.py)."""
    if isinstance(spec, RangeFilter):
        return (ext.OP_RANGE, (spec.min, spec.max))
    if isinstance(spec, SpikeFilter):
        replace = 1.0 if spec.action == "replace" else 0.0
        return (ext.OP_SPIKE, (float(spec.window), spec.k, spec.min_dev, replace))
    if isinstance(spec, SmoothFilter):
        return (ext.OP_SMOOTH, (spec.alpha,))
    if isinstance(spec, DeadbandFilter):
        return (ext.OP_DEADBAND, (spec.abs, spec.pct, spec.heartbeat))
    if isinstance(spec, RateFilter):
        return (ext.OP_RATE, (spec.max_per_s,))
    if isinstance(spec, TotalizerFilter):
        scale = spec.scale if spec.scale is not None else abs(point.scale)
        modulus = math.ldexp(1.0, spec.width) * scale
        return (ext.OP_TOTAL, (modulus, spec.wrap_window, _TOTAL_OUT[spec.output]))
    if isinstance(spec, SwingingDoorFilter):
        return (ext.OP_SWD, (spec.deviation, spec.max_interval))
    raise TypeError(f"unknown filter spec {spec!r}")


def compile_chain(specs: Sequence[FilterSpec], point: Point) -> tuple[Step, ...]:
    """A point's chain as ``Bank`` takes it; raises ValueError for an invalid chain."""
    steps = tuple(compile_step(s, point) for s in specs)
    ext.normalize_chain(steps)  # validate now, with the point's name in the error
    return steps


def _output_rounder(specs: Sequence[FilterSpec], point: Point) -> Rounder:
    """A filtered value keeps the point's resolution, except a totalizer's rate (another
    quantity, per second): float32 precision is plenty for it."""
    if any(isinstance(s, TotalizerFilter) and s.output == "rate" for s in specs):
        return _seven_digits
    return filter_rounder(point)


def _seven_digits(v: float) -> float:
    return float(f"{v:.7g}")


@dataclass
class FilterStats:
    """Counters for metrics. Every numeric input ends up passed or suppressed exactly once
    (a sample the swinging door holds back is counted when it is archived or superseded)."""

    inputs: int = 0  # readings that went through a chain
    passed: int = 0  # of those, forwarded
    suppressed: int = 0  # of those, dropped (deadband, swinging door)
    rejected: int = 0  # forwarded with a quality a filter turned bad

    @property
    def suppression_ratio(self) -> float:
        done = self.passed + self.suppressed
        return self.suppressed / done if done else 0.0


class DeviceFilters:
    """The filter bank of one device: chain per point = ``device.filters[point]`` if present,
    else the profile point's ``filters``. ``impl`` picks the kernel module (default: the one
    ``ext`` chose; tests pass ``ext._pyfilters`` or ``ext._filters``)."""

    def __init__(self, binding: DeviceBinding, *, impl: ModuleType | None = None) -> None:
        self.device_id = binding.id
        self.impl: ModuleType = impl if impl is not None else ext.impl
        overrides = binding.device.filters
        unknown = set(overrides) - {p.name for p in binding.profile.points}
        if unknown:
            raise ValueError(f"device {binding.id}: filters for unknown points {sorted(unknown)}")
        self._points: list[str] = []
        self._slot_of: dict[str, int] = {}
        chains: list[tuple[Step, ...]] = []
        self._round: list[Rounder] = []  # per slot: a computed value at the point's resolution
        for p in binding.profile.points:
            specs = overrides.get(p.name, p.filters)
            if not specs:
                continue
            try:
                chain = compile_chain(specs, p)
            except ValueError as exc:
                raise ValueError(f"device {binding.id}, point {p.name}: {exc}") from exc
            self._slot_of[p.name] = len(chains)
            self._points.append(p.name)
            chains.append(chain)
            self._round.append(_output_rounder(specs, p))
        self._bank: Any = self.impl.Bank(chains)
        self._held: dict[int, Reading] = {}
        self.stats = FilterStats()

    @property
    def points(self) -> tuple[str, ...]:
        """Names of the points that have a chain."""
        return tuple(self._points)

    def apply(self, batch: Sequence[Reading]) -> list[Reading]:
        """Run the bank once over ``batch``; returns the readings to forward, in order (a
        sample the swinging door archives late is inserted before the one that closed its
        door). Readings of points without a chain, and non-numeric values, pass untouched;
        a value-less bad/stale reading goes through as NaN so deadbands see the quality."""
        pos: list[int] = []
        slots: list[int] = []
        ts: list[float] = []
        xs: list[float] = []
        qs: list[int] = []
        slot_of = self._slot_of
        for i, r in enumerate(batch):
            s = slot_of.get(r.point)
            if s is None:
                continue
            v = r.value
            if isinstance(v, float):
                x = v
            elif isinstance(v, int) and not isinstance(v, bool):
                x = float(v) if -1e308 < v < 1e308 else math.copysign(math.inf, v)
            elif v is None and r.quality is not Quality.GOOD:
                x = math.nan
            else:
                continue
            pos.append(i)
            slots.append(s)
            ts.append(r.observed_at_ms / 1000.0)
            xs.append(x)
            qs.append(_Q_CODE[r.quality])
        n = len(pos)
        if n == 0:
            return list(batch)
        y = array("d", bytes(8 * n))
        qo = array("B", bytes(n))
        rc = array("B", bytes(n))
        em = array("B", bytes(n))
        self._bank.process(
            array("i", slots), array("d", ts), array("d", xs), array("B", qs), y, qo, rc, em
        )
        return self._collect(batch, pos, slots, xs, qs, y, qo, rc, em)

    def _collect(
        self,
        batch: Sequence[Reading],
        pos: list[int],
        slots: list[int],
        xs: list[float],
        qs: list[int],
        y: array[float],
        qo: array[int],
        rc: array[int],
        em: array[int],
    ) -> list[Reading]:
        out: list[Reading] = []
        st = self.stats
        held = self._held
        j = 0
        n = len(pos)
        for i, r in enumerate(batch):
            if j >= n or pos[j] != i:
                out.append(r)
                continue
            e = em[j]
            s = slots[j]
            st.inputs += 1
            if e & ext.EMIT_HELD:
                h = held.pop(s, None)
                if h is not None:
                    out.append(h)
                    st.passed += 1
            upd = r
            code = rc[j]
            if qo[j] != qs[j] or code:
                upd = dataclasses.replace(
                    r,
                    quality=_Q_OF[qo[j]],
                    reason=ext.REASON_NAMES[code] if code else r.reason,
                )
                if qo[j] == ext.Q_BAD and qs[j] != ext.Q_BAD:
                    st.rejected += 1
            if r.value is not None and _pack(y[j]) != _pack(xs[j]):
                upd = dataclasses.replace(upd, value=self._round[s](y[j]))
            if e & ext.HELD:
                if held.get(s) is not None:
                    st.suppressed += 1
                held[s] = upd
            elif e & ext.EMIT_NOW:
                out.append(upd)
                st.passed += 1
            else:
                st.suppressed += 1
            j += 1
        return out

    def carry_state_from(self, old: DeviceFilters) -> int:
        """Take over the state of ``old`` (the bank before a config reload) for every point
        whose compiled chain did not change; returns how many points kept their state."""
        mapping = [old._slot_of.get(name, -1) for name in self._points]
        self._bank.carry_state_from(old._bank, mapping)
        kept = 0
        for s, o in enumerate(mapping):
            if o >= 0 and self._bank.chain(s) == old._bank.chain(o):
                kept += 1
                h = old._held.get(o)
                if h is not None:
                    self._held[s] = h
        return kept
