"""When the bus owner does things: poll schedules per interval group, exponential backoff
with jitter, tick arithmetic. Shared by every bus kind.

Pure code (no I/O, no clock reads): callers pass the monotonic time in, so tests can drive
these with any numbers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drivers.core.profile import Point

DUE_SLACK = 0.005  # groups falling due within this many seconds are read in the same poll


class Backoff:
    """Delays ``initial, 2·initial, 4·initial … maximum``, each spread by ±``jitter`` so that
    many gateways (or many units) that failed together do not retry in lockstep."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """Register one more failure and return how long to wait before the next attempt."""
        base = min(self.maximum, self.initial * 2.0 ** min(self.failures, 60))
        self.failures += 1
        spread = base * self.jitter
        return max(0.0, min(self.maximum, base + self._rng.uniform(-spread, spread)))

    def reset(self) -> None:
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0


def next_tick(due: float, interval: float, now: float) -> tuple[float, int]:
    """The first tick of the grid ``due + k·interval`` that is still ahead of ``now``, and how
    many ticks were skipped on the way. Late ticks are dropped, never queued: a poll that ran
    long (or waited for a busy bus) costs overruns, not a burst of catch-up polls."""
    nxt = due + interval
    if nxt > now:
        return nxt, 0
    skipped = math.floor((now - nxt) / interval) + 1
    nxt += skipped * interval
    if nxt <= now:  # float rounding at an exact multiple
        nxt += interval
        skipped += 1
    return nxt, skipped


ON_GRID = 0.001  # s: a start this close to a tick is that tick


def first_aligned_tick(now: float, wall: float, interval: float) -> float:
    """The first tick on wall-clock multiples of ``interval`` after ``now`` (``wall`` is the
    wall clock at ``now``). The immediate first poll belongs to the slot it falls in, and the
    next slot's tick is kept even when it comes soon after: skipping it (as an earlier rule of
    "at least half an interval on" did) left a hole in the platform's time slots after every
    restart (issue 15, point 7)."""
    ahead = -wall % interval
    if ahead < ON_GRID:  # the first poll is this slot's tick already
        ahead += interval
    return now + ahead


@dataclass
class Group:
    """Points sharing one poll interval (the device's, or a point's own ``interval``)."""

    interval: float
    points: tuple[Point, ...]
    due: float = 0.0
    first_tick: float | None = None  # the aligned grid's first tick, until the first poll ends


class Schedule:
    """A device's points in groups by poll interval, and when each group is due next."""

    def __init__(self, points: Iterable[Point], interval: float) -> None:
        by_interval: dict[float, list[Point]] = {}
        for p in points:
            by_interval.setdefault(p.interval or interval, []).append(p)
        self.groups = [Group(i, tuple(ps)) for i, ps in sorted(by_interval.items())]
        self.due = math.inf  # earliest due time of its groups (monotonic)

    def start(self, now: float, wall: float | None = None) -> None:
        """First poll now. With ``wall`` (the wall clock at ``now``) the following ones fall on
        wall-clock multiples of each interval, like Telegraf's ``round_interval``: every device
        and bus with one interval polls in the same time slot, so the readings of one cycle
        carry neighbouring timestamps on every bus and reach the outbox in one group commit."""
        for g in self.groups:
            g.due = now
            g.first_tick = None if wall is None else first_aligned_tick(now, wall, g.interval)
        self.due = min((g.due for g in self.groups), default=math.inf)

    def due_groups(self, now: float) -> list[Group]:
        return [g for g in self.groups if g.due <= now + DUE_SLACK]

    def advance(self, groups: Iterable[Group], now: float, started: float | None = None) -> int:
        """Move ``groups`` (just polled, or skipped) to their next tick; the ticks missed.
        ``started``: when this poll began. A first poll belongs to the slot it started in, so
        aligned ticks that came before it (while the link opened, or the bus polled the
        devices ahead of this one) were never late: they are not overruns."""
        missed = 0
        for g in groups:
            if g.first_tick is not None:  # onto the aligned grid after the first poll
                g.due, g.first_tick = g.first_tick - g.interval, None
                if started is not None and started >= g.due + g.interval:
                    g.due = next_tick(g.due, g.interval, started)[0] - g.interval
            g.due, skipped = next_tick(g.due, g.interval, now)
            missed += skipped
        # kept as a plain attribute: the bus owner compares it for every device on every step
        self.due = min((g.due for g in self.groups), default=math.inf)
        return missed
