"""What the technician's live views cost: the control socket's ``snapshot`` operation in the
daemon (built and serialised, as ``cityedge watch`` asks for it every second), and what
importing rich costs the commands that print (the daemon never imports it).

    .venv/bin/python bench/bench_cli.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit_json

DEVICES, BUSES = 50, 10


def gateway(n: int, buses: int) -> str:
    lines = ['[gateway]\nid = "bench"\nstate_dir = "state"\nwatch_config = 0\n']
    for b in range(buses):
        lines.append(f'[[buses]]\nid = "b{b}"\nendpoint = "tcp://127.0.0.1:{20000 + b}"\n')
    for d in range(n):
        lines.append(
            f'[[devices]]\nid = "lamp-{d}"\nbus = "b{d % buses}"\n'
            f'profile = "cityedge/streetlight"\nunit_id = {d % 247 + 1}\ninterval = 1.0\n'
        )
    lines.append('[[outputs]]\ntype = "jsonl"\nid = "o"\npath = "/dev/null"\n')
    return "\n".join(lines)


def snapshot_cost(rounds: int) -> dict[str, float]:
    from agent.config import load_config
    from agent.control.snapshot import snapshot_of
    from agent.runtime import Agent
    from drivers.core.reading import Reading, now_ms

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "gateway.toml"
        cfg.write_text(gateway(DEVICES, BUSES))
        agent = Agent(load_config(cfg))
        now = now_ms()
        for b in agent.bindings:  # every point has a last value, as after the first poll
            for i, p in enumerate(b.profile.points):
                agent.pipeline.last_values[(b.id, p.name)] = Reading(
                    "bench", b.id, "streetlight", p.name, p.metric_name, 230.0 + i, p.unit,
                    p.unit_code, now,
                )  # fmt: skip
        values = len(agent.pipeline.last_values)
        times = []
        size = 0
        for _ in range(rounds):
            t0 = time.perf_counter()
            text = json.dumps({"ok": True, **snapshot_of(agent)}, default=str)
            times.append(time.perf_counter() - t0)
            size = len(text)
    return {
        "values": values,
        "snapshot_ms": round(statistics.median(times) * 1000, 2),
        "snapshot_ms_p90": round(sorted(times)[int(len(times) * 0.9)] * 1000, 2),
        "snapshot_kib": round(size / 1024, 1),
    }


IMPORT = """
import re, sys, time
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read())[1]) / 1024
import agent.cli.main
agent.cli.main.build_parser()
r0, t0 = rss(), time.perf_counter()
import agent.cli.render, agent.cli.views, rich.live, rich.progress
print(round((time.perf_counter() - t0) * 1000, 1), round(rss() - r0, 2))
"""


def rich_cost(runs: int) -> dict[str, float]:
    ms, mb = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT], capture_output=True, text=True, check=True
        ).stdout.split()
        ms.append(float(out[0]))
        mb.append(float(out[1]))
    return {"rich_import_ms": statistics.median(ms), "rich_import_mb": statistics.median(mb)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res: dict[str, float] = {}
    res.update(snapshot_cost(50 if args.quick else 200))
    res.update(rich_cost(3 if args.quick else 5))
    print(
        f"snapshot of {DEVICES} devices, {res['values']:.0f} last values: "
        f"{res['snapshot_ms']} ms median (p90 {res['snapshot_ms_p90']} ms) built and "
        f"serialised, {res['snapshot_kib']} KiB of JSON"
    )
    print(
        f"importing rich and the views (commands that print only): "
        f"{res['rich_import_ms']} ms, +{res['rich_import_mb']} MB RSS (median)"
    )
    if args.json:
        emit_json(res)


if __name__ == "__main__":
    main()
