"""A/B: the agent at a git revision against the working tree, side by side, in one run.

On a shared VM two end-to-end figures taken minutes apart differ by tens of percent, which
hides any change smaller than that. Here both agents run at the same time, each on its own
identical simulator fleet (10 buses), publishing to one Mosquitto, in the systemd unit's
environment: whatever else the machine does hits both alike, and the CPU ratio B/A is the
figure. Each round starts a fresh pair; the order of start alternates between rounds.

    .venv/bin/python bench/bench_ab.py REV [--rounds 3] [--window 30] [--workload 50x12]

A is REV (checked out into a temporary git worktree), B is the working tree. The compiled
filter module is shared when the Cython sources in ext/ are unchanged between the two,
otherwise both run the pure-Python filters so that the comparison stays fair.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_e2e import BUSES, WORKLOADS
from bench.common import (
    GATEWAY_ID,
    ROOT,
    Mosquitto,
    SimFleet,
    gateway_config,
    rss_mb,
    start_agent,
    stop_agent,
    workdir,
)


def thread_cpu(pid: int) -> float:
    """On-CPU seconds of every thread of ``pid`` (schedstat, ns-precise: the tick-sampled
    utime of /proc/PID/stat is too coarse for a 30 s window at 2 % of a core)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except OSError:  # a thread that ended meanwhile
            pass
    return total / 1e9


def worktree(rev: str, into: Path) -> bool:
    """Check ``rev`` out into ``into``; True when its ext/ sources equal the working tree's
    (then the compiled filter module built here is valid there too)."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(into), rev],
        check=True,
        capture_output=True,
    )
    # the compiled module depends on its Cython sources only (not on ext/__init__.py, say)
    sources = ["ext/*.pyx", "ext/*.pxd", "setup.py"]
    same = subprocess.run(
        ["git", "-C", str(ROOT), "diff", "--quiet", rev, "--", *sources], check=False
    ).returncode
    if same == 0:
        for so in (ROOT / "ext").glob("_filters*.so"):
            shutil.copy2(so, into / "ext" / so.name)
    return same == 0


def one_round(
    base: Path,
    broker: Mosquitto,
    tree_a: Path,
    workload: tuple[int, int],
    window: float,
    n: int,
    no_ext: bool,
) -> tuple[float, float, float, float]:
    """One pair of agents: (A %core, B %core, A RSS MB, B RSS MB)."""
    units, points = workload
    fleets = [SimFleet(BUSES, units), SimFleet(BUSES, units)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cfgs = []
        for tag, fleet in zip("ab", fleets, strict=True):
            d = base / f"{tag}{n}"
            d.mkdir()
            cfg = gateway_config(
                d, fleet.ports, units, points=points, interval=1.0, broker_url=broker.url
            )
            # two gateways on one broker need two client ids
            cfg.write_text(cfg.read_text().replace(GATEWAY_ID, f"{GATEWAY_ID}-{tag}"))
            cfgs.append(cfg)
        trees = [tree_a, ROOT]
        started = {}
        for i in [0, 1] if n % 2 == 0 else [1, 0]:
            env = {"PYTHONPATH": str(trees[i])}
            started[i] = start_agent(cfgs[i], extra_env=env, no_ext=no_ext)
        procs = [started[0], started[1]]
        time.sleep(10.0)  # warm-up: connected, first polls done
        c0 = [thread_cpu(p.pid) for p in procs]
        time.sleep(window)
        c1 = [thread_cpu(p.pid) for p in procs]
        rss = [rss_mb(p.pid)[0] for p in procs]
        for p, cfg in zip(procs, cfgs, strict=True):
            stop_agent(p, cfg)
        procs = []
        cpu = [(b - a) / window * 100 for a, b in zip(c0, c1, strict=True)]
        return cpu[0], cpu[1], rss[0], rss[1]
    finally:
        for p in procs:
            p.kill()
        for f in fleets:
            f.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="git revision for A (B is the working tree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--workload", choices=list(WORKLOADS), default="50x12")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cityedge-ab-"))
    tree_a = tmp / "a"
    try:
        no_ext = not worktree(args.rev, tree_a)
        if no_ext:
            print("ext/ differs between the revisions: both run the pure-Python filters")
        print(
            f"A = {args.rev}, B = working tree; {args.workload} at 1 s, {args.window:g} s windows"
        )
        print("round  A %core  B %core   B/A   A RSS MB  B RSS MB")
        ratios = []
        with workdir("ab") as base:
            broker = Mosquitto(base)
            broker.start()
            try:
                for n in range(args.rounds):
                    a, b, ra, rb = one_round(
                        base, broker, tree_a, WORKLOADS[args.workload], args.window, n, no_ext
                    )
                    ratios.append(b / a)
                    print(f"{n + 1:5d}  {a:7.2f}  {b:7.2f}  {b / a:5.3f}  {ra:8.1f}  {rb:8.1f}")
            finally:
                broker.stop()
        mid, lo, hi = statistics.median(ratios), min(ratios), max(ratios)
        print(f"B/A CPU ratio: median {mid:.3f}, range {lo:.3f}-{hi:.3f}")
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree_a)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
