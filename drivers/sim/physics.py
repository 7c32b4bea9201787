"""Shared physics for the simulated devices: local solar day, daily load curves, totalizers.

Everything is a pure function of simulated time (UTC epoch seconds) so tests can drive the
models with an injected clock. The simulated site is Hanoi (UTC+7, ~21°N): the sun rises about
05:30-06:15 and sets about 17:15-18:45 local time over the year; we use a fixed 06:00-18:00
local day (DESIGN: the platform gets UTC, only the physics needs local time).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

Clock = Callable[[], float]  # simulated UTC epoch seconds

UTC_OFFSET_S = 7 * 3600  # Asia/Ho_Chi_Minh, no DST
SUNRISE_H = 6.0
SUNSET_H = 18.0
U32 = 1 << 32
MAX_STEP_S = 60.0  # integrate rates in steps of at most one simulated minute...
MAX_STEPS = 2000  # ...unless that would take more steps than this


def local_hour(t: float) -> float:
    """Hour of the local (UTC+7) day, 0 <= h < 24."""
    return ((t + UTC_OFFSET_S) % 86400.0) / 3600.0


def is_daytime(t: float) -> bool:
    return SUNRISE_H <= local_hour(t) < SUNSET_H


def ambient_lux(t: float) -> float:
    """Clear-sky horizontal illuminance, roughly: 0 at night, ~100 klx at solar noon."""
    h = local_hour(t)
    if not SUNRISE_H <= h < SUNSET_H:
        return 0.0
    elevation = math.sin(math.pi * (h - SUNRISE_H) / (SUNSET_H - SUNRISE_H))
    return 100_000.0 * float(max(0.0, elevation) ** 1.5)


def bump(h: float, centre: float, width: float) -> float:
    """Gaussian bump on the 24 h circle."""
    d = min(abs(h - centre), 24.0 - abs(h - centre))
    return float(math.exp(-0.5 * (d / width) ** 2))


def water_demand(h: float) -> float:
    """Relative household water demand (peak ~1): low at night, morning and evening peaks."""
    return 0.03 + 0.9 * bump(h, 7.0, 1.1) + 0.35 * bump(h, 12.0, 1.5) + bump(h, 19.5, 1.4)


def traffic_rate(h: float) -> float:
    """Vehicles per hour on an urban Hanoi arterial lane: rush hours at 07:30 and 17:30."""
    return (
        80.0 + 1500.0 * bump(h, 7.5, 1.2) + 500.0 * bump(h, 12.0, 2.5) + 1700.0 * bump(h, 17.5, 1.3)
    )


def now_clock() -> float:
    return time.time()


class Totalizer:
    """A counter register that only grows and wraps at its width (like the device's)."""

    def __init__(self, value: float = 0.0, width_bits: int = 32) -> None:
        self.modulus = 1 << width_bits
        self.value = value % self.modulus  # fractional part kept: counts are integrated

    def add(self, amount: float) -> None:
        if amount < 0:
            raise ValueError("a totalizer never decreases")
        self.value = (self.value + amount) % self.modulus

    def preset(self, value: float) -> None:
        """Set the count, e.g. just below roll-over for tests."""
        self.value = value % self.modulus

    @property
    def raw(self) -> int:
        return int(self.value) % self.modulus


class Stepper:
    """Integrates a model from its last update time to ``now`` in bounded steps."""

    def __init__(self, clock: Clock, seed: int) -> None:
        self.clock = clock
        self.last = clock()
        self.rng = random.Random(seed)

    def steps(self) -> list[tuple[float, float]]:
        """(t, dt) pairs covering (last, now]; empty if the clock did not move forward."""
        now = self.clock()
        out: list[tuple[float, float]] = []
        t = self.last
        # at most MAX_STEPS steps per call, so a huge --speed or a clock jump stays cheap
        step = max(MAX_STEP_S, (now - t) / MAX_STEPS)
        while now - t > 1e-9:
            dt = min(step, now - t)
            t += dt
            out.append((t, dt))
        self.last = max(self.last, now)
        return out

    def noise(self, rel: float) -> float:
        """Multiplicative noise factor 1 ± rel (Gaussian, clipped at 3 sigma)."""
        return 1.0 + max(-3.0, min(3.0, self.rng.gauss(0.0, 1.0))) * rel

    def poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        if lam > 50:  # normal approximation; exact sampling is slow for big lambdas
            return max(0, round(self.rng.gauss(lam, math.sqrt(lam))))
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1
