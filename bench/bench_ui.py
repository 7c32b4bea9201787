"""What an open commissioning page costs: 50 devices x 12 points polled every second (10 buses),
agent -> Mosquitto; the agent's CPU with no page and with `cityedge ui` serving one open page
(live events every second), in alternating windows; the page process's own CPU and memory,
and the size of one live snapshot.

    .venv/bin/python bench/bench_ui.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    PY,
    Mosquitto,
    SimFleet,
    cpu_seconds,
    emit_json,
    gateway_config,
    rss_mb,
    start_agent,
    stop_agent,
    workdir,
)
from tests.conftest import free_port


class Listener(threading.Thread):
    """One open page: reads the event stream, counts snapshots and their bytes."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.snapshots = 0
        self.bytes = 0
        self.devices = 0
        self.error: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        with urllib.request.urlopen(self.url + "api/events", timeout=30) as resp:
            event = None
            for raw in resp:
                if self.stop.is_set():
                    return
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "snapshot":
                    self.snapshots += 1
                    self.bytes += len(raw)
                    doc = json.loads(line[6:])
                    if not doc["agent"]["reachable"]:
                        self.error = doc["agent"]["error"]
                    self.devices = len(doc.get("devices", {}))


def window(pids: list[int], seconds: float) -> list[float]:
    c0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
    time.sleep(seconds)
    c1, t1 = [cpu_seconds(p) for p in pids], time.monotonic()
    return [100 * (b - a) / (t1 - t0) for a, b in zip(c0, c1, strict=True)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 x 10 s windows instead of 2 x 30 s")
    ap.add_argument("--json", action="store_true", help="also print a BENCH-JSON result line")
    args = ap.parse_args()
    span = 10.0 if args.quick else 30.0
    rounds = 2
    with workdir("ui") as base:
        broker = Mosquitto(base)
        broker.start()
        fleet = SimFleet(10, 5)
        ui = None
        try:
            cfg = gateway_config(
                base, fleet.ports, 5, points=12, interval=1.0, broker_url=broker.url
            )
            agent = start_agent(cfg)
            port = free_port()
            try:
                time.sleep(8.0)  # warm-up: every bus open, the outbox in its steady state
                control = base / "state" / "control.sock"
                ui = subprocess.Popen(
                    [PY, "-m", "agent", "ui", "--socket", str(control), "--port", str(port)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
                assert ui.stdout is not None
                ui.stdout.readline()  # "commissioning page on http://..."
                url = f"http://127.0.0.1:{port}/"
                idle, page, page_proc = [], [], []
                for _ in range(rounds):
                    idle.append(window([agent.pid], span)[0])
                    listener = Listener(url)
                    listener.start()
                    time.sleep(2.0)  # the first snapshot and the plan are out
                    a, u = window([agent.pid, ui.pid], span)
                    page.append(a)
                    page_proc.append(u)
                    listener.stop.set()
                    time.sleep(2.0)  # the page notices the closed stream and stops polling
                ui_rss, ui_peak = rss_mb(ui.pid)
            finally:
                if ui is not None:
                    ui.terminate()
                    ui.wait(10)
                stop_agent(agent, cfg)
        finally:
            fleet.stop()
            broker.stop()
    if listener.error is not None or not listener.devices:
        print(f"bench_ui: the page could not show the agent: {listener.error}", file=sys.stderr)
        return 1
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    snap_kb = listener.bytes / max(1, listener.snapshots) / 1024
    result = {
        "devices": listener.devices,
        "points": listener.devices * 12,
        "window_s": span,
        "rounds": rounds,
        "agent_cpu_pct_no_page": round(mean(idle), 2),
        "agent_cpu_pct_page": round(mean(page), 2),
        "page_cost_pct": round(mean(page) - mean(idle), 2),
        "ui_cpu_pct": round(mean(page_proc), 2),
        "ui_rss_mb": round(ui_rss, 1),
        "ui_peak_mb": round(ui_peak, 1),
        "snapshot_kb": round(snap_kb, 1),
    }
    print(
        f"{result['devices']} devices x 12 points every 1 s; one open page, a snapshot a second\n"
        f"  agent CPU, no page:        {result['agent_cpu_pct_no_page']:.2f} % of one core "
        f"(windows: {', '.join(f'{x:.2f}' for x in idle)})\n"
        f"  agent CPU, one page open:  {result['agent_cpu_pct_page']:.2f} % "
        f"(windows: {', '.join(f'{x:.2f}' for x in page)})\n"
        f"  the page's cost to agent:  {result['page_cost_pct']:+.2f} % of one core\n"
        f"  page process CPU:          {result['ui_cpu_pct']:.2f} % of one core\n"
        f"  page process memory:       {result['ui_rss_mb']:.1f} MB RSS "
        f"(peak {result['ui_peak_mb']:.1f} MB)\n"
        f"  one live snapshot:         {result['snapshot_kb']:.1f} KiB"
    )
    if args.json:
        emit_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
