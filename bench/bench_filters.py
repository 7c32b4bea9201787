"""Filter kernel throughput (compiled vs Python twin vs NumPy) and compression on realistic
signals. Run: ``.venv/bin/python bench/bench_filters.py [--quick]``.

Layout as in the agent: one bank per bus, one slot per point, one ``process`` call per poll
batch holding one sample of every point (so a batch of 4096 is 4096 points polled once).
Each figure is the best of a few timed repeats (the dev machine is shared; the best run is the
least disturbed one).
"""

from __future__ import annotations

import argparse
import importlib
import math
import random
import time
from array import array
from collections.abc import Callable
from types import ModuleType
from typing import Any

import ext._pyfilters as py
from ext._common import (
    EMIT_HELD,
    EMIT_NOW,
    HELD,
    OP_DEADBAND,
    OP_RANGE,
    OP_RATE,
    OP_SMOOTH,
    OP_SPIKE,
    OP_SWD,
    OP_TOTAL,
)

try:
    import ext._filters as cy
except ImportError:  # pragma: no cover
    cy = None
try:  # optional (the bench extra); typed loosely so mypy passes with or without it installed
    np: Any = importlib.import_module("numpy")
except ImportError:  # pragma: no cover
    np = None

Chain = list[tuple[int, tuple[float, ...]]]
TYPICAL: Chain = [
    (OP_RANGE, (-1000.0, 1000.0)),
    (OP_SPIKE, (5.0, 3.0, 0.0, 0.0)),
    (OP_DEADBAND, (0.5, 0.0, 300.0)),
]
KERNELS: dict[str, Chain] = {
    "range": [(OP_RANGE, (-1000.0, 1000.0))],
    "spike(5)": [(OP_SPIKE, (5.0, 3.0, 0.0, 0.0))],
    "spike(15)": [(OP_SPIKE, (15.0, 3.0, 0.0, 0.0))],
    "smooth": [(OP_SMOOTH, (0.2,))],
    "deadband": [(OP_DEADBAND, (0.5, 0.0, 300.0))],
    "rate": [(OP_RATE, (5.0,))],
    "totalizer": [(OP_TOTAL, (65536.0, 0.1, 0.0))],
    "swd": [(OP_SWD, (0.5, 3600.0))],
    "typical": TYPICAL,
}
SIZES = (16, 256, 4096)
NBATCH = 32  # distinct input batches cycled through (a changing signal, not one replayed)


def make_inputs(name: str, b: int) -> list[tuple[array[float], array[float], array[int]]]:
    rnd = random.Random(b)
    level = [rnd.uniform(-100, 100) for _ in range(b)]
    out = []
    for k in range(NBATCH):
        xs = array("d")
        for i in range(b):
            if name == "totalizer":
                level[i] = (level[i] + 100.0 + rnd.random() * 50) % 65536.0
                xs.append(level[i])
                continue
            level[i] += rnd.gauss(0, 0.3)
            xs.append(level[i] + (rnd.choice((-50.0, 50.0)) if rnd.random() < 0.01 else 0.0))
        out.append((array("d", [float(k)]) * b, xs, array("B", bytes(b))))
    return out


def throughput(impl: ModuleType, chain: Chain, name: str, b: int, budget: float) -> float:
    bank = impl.Bank([chain] * b)
    inputs = make_inputs(name, b)
    sl = array("i", range(b))
    y = array("d", bytes(8 * b))
    qo, rc, em = array("B", bytes(b)), array("B", bytes(b)), array("B", bytes(b))
    best = math.inf
    t_shift = 0.0
    for _ in range(3):
        n = 0
        t0 = time.perf_counter()
        while True:
            for ts, xs, qs in inputs:
                bank.process(sl, ts, xs, qs, y, qo, rc, em)
            n += NBATCH
            dt = time.perf_counter() - t0
            if dt > budget / 3:
                break
        best = min(best, dt / (n * b))
        t_shift += 1.0
    return 1.0 / best


def numpy_kernels() -> dict[str, Callable[[int], Callable[[Any, Any], None]]]:
    """The same computations in NumPy, vectorised across points (one sample per point)."""
    assert np is not None

    def rng(b: int) -> Callable[[Any, Any], None]:
        lo, hi = -1000.0, 1000.0

        def step(t: Any, x: Any) -> None:
            bad = ~((x >= lo) & (x <= hi)) | ~np.isfinite(x)
            _ = np.where(bad, 1, 0).astype(np.uint8)

        return step

    def smooth(b: int) -> Callable[[Any, Any], None]:
        s = np.zeros(b)
        init = np.zeros(b, dtype=bool)

        def step(t: Any, x: Any) -> None:
            nonlocal s
            s2 = s + 0.2 * (x - s)
            s = np.where(init & np.isfinite(s2), s2, x)
            init[:] = True

        return step

    def deadband(b: int) -> Callable[[Any, Any], None]:
        last = np.zeros(b)
        last_t = np.full(b, -np.inf)

        def step(t: Any, x: Any) -> None:
            send = (np.abs(x - last) > 0.5) | (t - last_t >= 300.0) | (t < last_t)
            last[send] = x[send]
            last_t[send] = t[send]

        return step

    def typical(b: int) -> Callable[[Any, Any], None]:
        ring = np.zeros((b, 5))
        k = [0]
        db = deadband(b)

        def step(t: Any, x: Any) -> None:
            bad = ~((x >= -1000.0) & (x <= 1000.0))
            ring[:, k[0] % 5] = x + 0.0
            k[0] += 1
            srt = np.sort(ring, axis=1)
            m = srt[:, 2]
            mad = np.sort(np.abs(srt - m[:, None]), axis=1)[:, 2]
            bad |= np.abs(x - m) > 3.0 * 1.4826 * mad
            db(t, x)
            _ = bad

        return step

    return {"range": rng, "smooth": smooth, "deadband": deadband, "typical": typical}


def numpy_throughput(
    make: Callable[[int], Callable[[Any, Any], None]], name: str, b: int, budget: float
) -> float:
    assert np is not None
    inputs = [(np.asarray(ts), np.asarray(xs)) for ts, xs, _ in make_inputs(name, b)]
    step = make(b)
    best = math.inf
    for _ in range(3):
        n = 0
        t0 = time.perf_counter()
        while True:
            for ts, xs in inputs:
                step(ts, xs)
            n += NBATCH
            dt = time.perf_counter() - t0
            if dt > budget / 3:
                break
        best = min(best, dt / (n * b))
    return 1.0 / best


def bench_throughput(quick: bool) -> None:
    budget = 0.15 if quick else 0.4
    npk = numpy_kernels() if np is not None else {}
    print(f"throughput, M samples/s (best of 3; {'quick' if quick else 'full'} run)")
    print(f"{'kernel':<11}{'batch':>6}{'compiled':>10}{'python':>9}{'numpy':>9}{'cy/py':>8}")
    typical_4096 = 0.0
    for name, chain in KERNELS.items():
        for b in SIZES:
            c = throughput(cy, chain, name, b, budget) if cy is not None else math.nan
            p = throughput(py, chain, name, b, budget / 4)
            n = numpy_throughput(npk[name], name, b, budget) if name in npk else math.nan
            if name == "typical" and b == 4096:
                typical_4096 = c
            nn = f"{n / 1e6:9.2f}" if not math.isnan(n) else f"{'-':>9}"
            print(f"{name:<11}{b:>6}{c / 1e6:10.2f}{p / 1e6:9.3f}{nn}{c / p:7.0f}x")
    print(
        f"typical chain (range -> spike(5) -> deadband+heartbeat) at batch 4096: "
        f"{typical_4096 / 1e6:.1f} M samples/s on one core (target >= 20)"
    )


# --- compression on realistic signals -------------------------------------------------------


def day(step_s: float) -> list[float]:
    return [i * step_s for i in range(int(86400 / step_s))]


def energy_signal(rnd: random.Random) -> tuple[list[float], list[float], Chain, str]:
    """A 16-bit energy register in 0.1 kWh (wraps at 6553.6 kWh), 10 s polls, a building load
    of 20..80 kW; starts near the wrap so the day crosses it."""
    ts = day(10.0)
    raw, e = [], 6400.0
    for t in ts:
        h = t / 3600.0
        kw = 20 + 60 * max(0.0, math.sin(math.pi * (h - 6) / 14)) + rnd.gauss(0, 2)
        e += max(kw, 0.0) * 10 / 3600
        raw.append(math.floor(e * 10) / 10 % 6553.6)
    chain: Chain = [(OP_TOTAL, (6553.6, 0.1, 0.0)), (OP_SWD, (0.5, 900.0))]
    return ts, raw, chain, "totalizer -> swd(0.5 kWh)"


def lamp_signal(rnd: random.Random) -> tuple[list[float], list[float], Chain, str]:
    """Streetlight power, 5 s polls: off by day, 120 W at dusk, dimmed to 60 W 00:00-05:00,
    +-1 W noise and a few glitches."""
    ts = day(5.0)
    xs = []
    for t in ts:
        h = t / 3600.0
        p = 0.0 if 6.5 <= h < 18 else (60.0 if h < 5 else 120.0)
        v = p + (rnd.gauss(0, 0.7) if p else 0.0)
        xs.append(v + 400.0 if rnd.random() < 0.001 else v)
    chain: Chain = [
        (OP_RANGE, (0.0, 300.0)),
        (OP_SPIKE, (5.0, 3.0, 2.0, 0.0)),
        (OP_DEADBAND, (3.0, 0.0, 900.0)),
    ]
    return ts, xs, chain, "range -> spike -> deadband(3 W, 900 s)"


def water_signal(rnd: random.Random) -> tuple[list[float], list[float], Chain, str]:
    """District water flow in m3/h, 15 s polls: morning and evening peaks, a 0.3 m3/h leak
    that starts at 01:00 and stays, +-0.05 noise."""
    ts = day(15.0)
    xs = []
    for t in ts:
        h = t / 3600.0
        base = (
            0.2
            + 3.0 * math.exp(-(((h - 7.5) / 1.2) ** 2))
            + 2.2 * math.exp(-(((h - 19.5) / 1.5) ** 2))
        )
        leak = 0.3 if h >= 1.0 else 0.0
        xs.append(max(0.0, base + leak + rnd.gauss(0, 0.05)))
    chain: Chain = [(OP_SPIKE, (5.0, 3.0, 0.1, 1.0)), (OP_SWD, (0.15, 900.0))]
    return ts, xs, chain, "spike(replace) -> swd(0.15 m3/h)"


def run_chain(
    impl: ModuleType, chain: Chain, ts: list[float], xs: list[float]
) -> tuple[array[float], array[int], array[int]]:
    n = len(xs)
    y = array("d", bytes(8 * n))
    qo, rc, em = array("B", bytes(n)), array("B", bytes(n)), array("B", bytes(n))
    impl.Bank([chain]).process(
        array("i", bytes(4 * n)),
        array("d", ts),
        array("d", xs),
        array("B", bytes(n)),
        y,
        qo,
        rc,
        em,
    )
    return y, qo, em


def compression(impl: ModuleType) -> None:
    rnd = random.Random(7)
    print("\ncompression over one day (error vs the chain's own input to its last step)")
    print(f"{'signal':<8}{'chain':<40}{'in':>7}{'out':>6}{'ratio':>7}{'max err':>9}")
    for name, make in (("energy", energy_signal), ("lamp", lamp_signal), ("water", water_signal)):
        ts, xs, chain, label = make(rnd)
        ref, rq, _ = run_chain(impl, chain[:-1], ts, xs)
        y, _qo, em = run_chain(impl, chain, ts, xs)
        # the forwarded (time, value) sequence, held samples inserted where archived
        fwd: list[tuple[float, float]] = []
        held = -1
        for i in range(len(xs)):
            if em[i] & EMIT_HELD:
                fwd.append((ts[held], y[held]))
            if em[i] & EMIT_NOW:
                fwd.append((ts[i], y[i]))
            if em[i] & HELD:
                held = i
        if held >= 0 and (not fwd or fwd[-1][0] < ts[held]):
            fwd.append((ts[held], y[held]))  # final flush
        linear = chain[-1][0] == OP_SWD
        worst, j = 0.0, 0
        for i, t in enumerate(ts):
            if rq[i] != 0:
                continue
            while j + 1 < len(fwd) and fwd[j + 1][0] <= t:
                j += 1
            t0, v0 = fwd[j]
            if linear and j + 1 < len(fwd):
                t1, v1 = fwd[j + 1]
                v0 = v0 + (v1 - v0) * (t - t0) / (t1 - t0)
            worst = max(worst, abs(v0 - ref[i]))
        print(
            f"{name:<8}{label:<40}{len(xs):>7}{len(fwd):>6}{len(xs) / len(fwd):6.0f}x{worst:9.3f}"
        )
        if name == "water":
            night = [v for t, v in fwd if 2 * 3600 <= t < 4 * 3600]
            print(
                f"        water 02:00-04:00 forwarded mean {sum(night) / max(len(night), 1):.3f}"
                f" m3/h over {len(night)} points (true night flow 0.5 incl. the 0.3 leak)"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing budget")
    ap.add_argument("--no-throughput", action="store_true")
    args = ap.parse_args()
    print(
        f"compiled module: {'ext._filters' if cy is not None else 'MISSING'}; "
        f"numpy: {np.__version__ if np is not None else 'not installed'}"
    )
    if not args.no_throughput:
        bench_throughput(args.quick)
    compression(cy if cy is not None else py)


if __name__ == "__main__":
    main()
