"""Idle cost: 50 devices polled every 10 s (10 buses), agent -> Mosquitto; % of one core the
agent process uses over a minute, after a warm-up. Target < 0.3 % of one core.

    .venv/bin/python bench/bench_idle.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Mosquitto,
    Sampler,
    SimFleet,
    cpu_seconds,
    emit_json,
    gateway_config,
    start_agent,
    stop_agent,
    workdir,
)

TARGET_PCT = 0.3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 s window instead of 60 s")
    ap.add_argument("--json", action="store_true", help="also print a BENCH-JSON result line")
    ap.add_argument("--window", type=float, default=None)
    args = ap.parse_args()
    window = args.window or (20.0 if args.quick else 60.0)
    warmup = 8.0
    with workdir("idle") as base:
        broker = Mosquitto(base)
        broker.start()
        fleet = SimFleet(10, 5)
        try:
            cfg = gateway_config(
                base, fleet.ports, 5, points=12, interval=10.0, broker_url=broker.url
            )
            proc = start_agent(cfg)
            try:
                with Sampler(proc.pid, period=2.0) as rss:
                    time.sleep(warmup)
                    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                    time.sleep(window)
                    c1, t1 = cpu_seconds(proc.pid), time.monotonic()
            finally:
                stop_agent(proc, cfg)
        finally:
            fleet.stop()
            broker.stop()
    pct = 100 * (c1 - c0) / (t1 - t0)
    print(
        f"idle: 50 devices x 12 points every 10 s over {t1 - t0:.0f} s: "
        f"{c1 - c0:.2f} CPU-s = {pct:.2f} % of one core (target < {TARGET_PCT} %); "
        f"RSS {rss.steady:.1f} MB"
    )
    if args.json:
        emit_json(
            {
                "bench": "idle",
                "window_s": round(t1 - t0, 1),
                "cpu_s": round(c1 - c0, 3),
                "cpu_pct": round(pct, 3),
                "rss_mb": round(rss.steady, 1),
                "target_pct": TARGET_PCT,
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
