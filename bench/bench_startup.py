"""Start-up: time from process start to READY=1 (sd_notify datagram on a socket we bind as
$NOTIFY_SOCKET; 50 devices on 10 buses, MQTT output), and `cityedge --help` (median of 5).
Target READY <= 2 s.

    .venv/bin/python bench/bench_startup.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    CACHE_ROOT,
    Mosquitto,
    SimFleet,
    emit_json,
    gateway_config,
    service_env,
    start_agent,
    stop_agent,
    workdir,
)

TARGET_READY = 2.0
CLI = Path(sys.executable).parent / "cityedge"


def time_ready(cfg: Path, base: Path, n: int, cache_root: Path = CACHE_ROOT) -> float:
    sock_path = base / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(sock_path))
        s.settimeout(30.0)
        t0 = time.monotonic()
        proc = start_agent(cfg, extra_env={"NOTIFY_SOCKET": str(sock_path)}, cache_root=cache_root)
        try:
            while True:
                msg = s.recv(4096)
                if b"READY=1" in msg.split(b"\n"):
                    return time.monotonic() - t0
        except TimeoutError:
            raise RuntimeError(f"no READY=1 within 30 s (run {n})") from None
        finally:
            stop_agent(proc, cfg)
            sock_path.unlink()


FOOTPRINT = """
import re, sys, json
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read())[1]) / 1024
steps = [("interpreter", rss())]
for label, mods in (
    ("stdlib (asyncio, ssl, sqlite3, json)", "asyncio ssl sqlite3 json"),
    ("pydantic (models and validation)", "pydantic pydantic.main pydantic_core"),
    ("pymodbus", "pymodbus.client pymodbus.server"),
    ("aiomqtt + paho-mqtt", "aiomqtt"),
    ("prometheus-client", "prometheus_client"),
    ("agent (runtime, MQTT sink, CLI)", "agent.runtime agent.forward.sinks.mqtt agent.cli.main"),
):
    for m in mods.split():
        __import__(m)
    steps.append((label, rss()))
print(json.dumps(steps))
"""


def import_footprint() -> list[tuple[str, float]]:
    """RSS (MiB) after importing each dependency group in turn, in a fresh interpreter."""
    import json

    out = subprocess.run(
        [sys.executable, "-c", FOOTPRINT],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **service_env()},  # -OO, as the unit runs the daemon
    ).stdout
    return [(k, v) for k, v in json.loads(out)]


def time_help() -> float:
    t0 = time.monotonic()
    subprocess.run([str(CLI), "--help"], check=True, capture_output=True)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 READY runs instead of 5")
    ap.add_argument("--json", action="store_true", help="also print a BENCH-JSON result line")
    args = ap.parse_args()
    runs = 3 if args.quick else 5
    helps = sorted(time_help() for _ in range(5))
    with workdir("startup") as base:
        broker = Mosquitto(base)
        broker.start()
        fleet = SimFleet(10, 5)
        try:
            cfg = gateway_config(
                base, fleet.ports, 5, points=12, interval=1.0, broker_url=broker.url
            )
            # first start after an install: the -OO bytecode cache is empty and gets compiled
            cold = time_ready(cfg, base, -1, cache_root=base / "fresh-cache")
            time_ready(cfg, base, 0)  # the bench's own cache warm, whatever ran before
            readys = sorted(time_ready(cfg, base, i) for i in range(runs))
        finally:
            fleet.stop()
            broker.stop()
    ready = statistics.median(readys)
    print(
        f"READY (50 devices, 10 buses, MQTT): median {ready:.2f} s, "
        f"min {readys[0]:.2f} s, max {readys[-1]:.2f} s over {runs} runs "
        f"(target <= {TARGET_READY} s)"
    )
    print(f"READY on the first start (empty bytecode cache, compiled then): {cold:.2f} s")
    print(f"cityedge --help: median {statistics.median(helps):.3f} s over 5 runs")
    foot = import_footprint()
    print("RSS after imports (fresh interpreter, cumulative):")
    prev = 0.0
    for label, mb in foot:
        print(f"  {label:<40} {mb:6.1f} MB  (+{mb - prev:.1f})")
        prev = mb
    if args.json:
        emit_json(
            {
                "bench": "startup",
                "ready_median_s": round(ready, 3),
                "ready_runs_s": [round(x, 3) for x in readys],
                "ready_first_start_s": round(cold, 3),
                "help_median_s": round(statistics.median(helps), 3),
                "target_ready_s": TARGET_READY,
                "import_rss_mb": [[k, round(v, 1)] for k, v in foot],
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
