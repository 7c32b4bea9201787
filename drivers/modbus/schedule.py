"""Timing helpers of the bus owner: exponential backoff with jitter and tick arithmetic.

Pure code (no I/O, no clock reads): callers pass the loop's monotonic time in, so tests can
drive these with any numbers.
"""

from __future__ import annotations

import math
import random


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
