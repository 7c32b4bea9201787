"""Read-plan benchmark: transactions, registers and RTU wire time per scan, four strategies.

    .venv/bin/python bench/bench_planner.py [--quick] [--profiles DIR] [--turnaround MS]

For every Modbus profile under drivers/profiles (recursively) and for seeded synthetic maps:

    optimal     drivers.modbus.planner.plan_reads (DP: fewest requests, then fewest registers)
    wire-opt    the same DP minimising RTU wire time (plan_reads(weights=rtu_weights(...)))
    per-point   one request per point (what users of other gateways complain about)
    contiguous  merge only touching/overlapping points (no gap fill)
    greedy      Telegraf ``max_insert`` style: walk the sorted points and extend the current
                request while the gap is <= max_gap and the request fits the cap

All strategies honour the per-device cap, undefined ranges and per-point poll intervals (a scan
polls every interval group once), so every plan is one the device accepts. Wire time assumes
Modbus RTU at 9600 baud 8E1 with a fixed device turnaround per request.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.core.library import ProfileLibrary
from drivers.core.profile import DataType, Limits, Point, Table, UndefinedRange
from drivers.modbus.planner import (
    ReadRequest,
    cap_for,
    forbidden_addresses,
    plan_reads,
    plan_wire_time,
    rtu_weights,
)

CHAR_TIME_9600_8E1 = 11 / 9600
Strategy = Callable[[Sequence[Point], Limits], Sequence[ReadRequest]]


def per_point(points: Sequence[Point], limits: Limits) -> list[ReadRequest]:
    return [ReadRequest(p.table, p.address, p.registers, (p,)) for p in points]


def _merging(points: Sequence[Point], limits: Limits, max_gap: int) -> list[ReadRequest]:
    """Single left-to-right pass: extend the current request while the next point fits."""
    forbidden = forbidden_addresses(limits)
    out: list[ReadRequest] = []
    for table in (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT):
        pts = sorted(
            (p for p in points if p.table is table), key=lambda p: (p.address, -p.registers)
        )
        if not pts:
            continue
        cap, fb = cap_for(table, limits), forbidden.get(table, frozenset())
        cur = [pts[0]]
        start, end = pts[0].address, pts[0].address + pts[0].registers
        for p in pts[1:]:
            p_end = p.address + p.registers
            hole = range(end, p.address)
            if (
                max(end, p_end) - start <= cap
                and len(hole) <= max_gap
                and not any(a in fb for a in hole)
            ):
                cur.append(p)
                end = max(end, p_end)
                continue
            out.append(ReadRequest(table, start, end - start, tuple(cur)))
            cur, start, end = [p], p.address, p_end
        out.append(ReadRequest(table, start, end - start, tuple(cur)))
    return out


def contiguous(points: Sequence[Point], limits: Limits) -> list[ReadRequest]:
    return _merging(points, limits, 0)


def greedy(points: Sequence[Point], limits: Limits) -> list[ReadRequest]:
    return _merging(points, limits, limits.max_gap)


def optimal(points: Sequence[Point], limits: Limits) -> Sequence[ReadRequest]:
    return plan_reads(points, limits)


def wire_optimal(turnaround: float) -> Strategy:
    weights = rtu_weights(CHAR_TIME_9600_8E1, turnaround)

    def plan(points: Sequence[Point], limits: Limits) -> Sequence[ReadRequest]:
        return plan_reads(points, limits, weights=weights)

    return plan


STRATEGIES: dict[str, Strategy] = {
    "optimal": optimal,
    "per-point": per_point,
    "contiguous": contiguous,
    "greedy": greedy,
}


def scan(
    strategy: Strategy, points: Sequence[Point], limits: Limits, turnaround: float
) -> tuple[int, int, float]:
    """(transactions, registers, wire seconds) for one poll of every interval group."""
    groups: dict[float, list[Point]] = {}
    for p in points:
        groups.setdefault(p.interval or 0.0, []).append(p)
    n = regs = 0
    wire = 0.0
    for pts in groups.values():
        reqs = strategy(pts, limits)
        n += len(reqs)
        regs += sum(r.count for r in reqs)
        wire += plan_wire_time(reqs, CHAR_TIME_9600_8E1, turnaround)
    return n, regs, wire


def synthetic(name: str, seed: int, n: int) -> tuple[str, list[Point], Limits]:
    """Seeded maps: sparse (points scattered over 4000 registers), dense (short gaps), blocks
    (clusters of values as vendors lay them out) with undefined holes and a 32-register cap."""
    rng = random.Random(seed)
    kinds = [DataType.UINT16, DataType.INT16, DataType.UINT32, DataType.FLOAT32, DataType.FLOAT64]
    points: list[Point] = []
    addr = 0
    undefined: list[UndefinedRange] = []
    limits = Limits()
    for i in range(n):
        kind = rng.choice(kinds)
        if name == "sparse":
            addr = rng.randrange(4000)
        elif name == "dense":
            addr += rng.choice([0, 0, 0, 1, 2, 3, 5, 8, 20])
        else:  # blocks
            if i % 12 == 0:
                gap = rng.randrange(20, 200)
                undefined.append(UndefinedRange(start=addr + 2, end=addr + 2 + gap // 4))
                addr += gap
            addr += rng.choice([0, 0, 1, 2, 4])
        points.append(Point(name=f"p{i}", address=addr, type=kind))
        if name != "sparse":
            addr += points[-1].registers
    if name == "blocks":
        limits = Limits(max_registers=32, max_gap=6, undefined=tuple(undefined))
        points = [
            p
            for p in points
            if not any(
                u.start <= a <= u.end
                for u in undefined
                for a in range(p.address, p.address + p.registers)
            )
        ]
    elif name == "sparse":
        limits = Limits(max_gap=10)
    return f"synthetic {name} ({len(points)} pts, seed {seed})", points, limits


def load_profiles(root: Path) -> list[tuple[str, list[Point], Limits]]:
    out: list[tuple[str, list[Point], Limits]] = []
    if not root.is_dir():
        return out
    lib = ProfileLibrary([root])
    for f in sorted(root.rglob("*.toml")):
        ref = str(f.relative_to(root).with_suffix(""))
        try:
            prof = lib.load(ref)
        except Exception as exc:  # a broken profile must not hide the others' figures
            print(f"  (skipped {ref}: {str(exc).splitlines()[0]})")
            continue
        if prof.protocol == "modbus":
            out.append((f"{ref} ({len(prof.points)} pts)", list(prof.points), prof.limits))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer and smaller synthetic maps")
    ap.add_argument("--profiles", type=Path, default=Path("drivers/profiles"))
    ap.add_argument("--turnaround", type=float, default=5.0, metavar="MS")
    args = ap.parse_args(argv)
    turnaround = args.turnaround / 1000
    STRATEGIES["wire-opt"] = wire_optimal(turnaround)
    maps = load_profiles(args.profiles)
    if not maps:
        print(f"  (no Modbus profiles under {args.profiles})")
    sizes = (60, 200) if args.quick else (60, 200, 400)
    seeds = (1,) if args.quick else (1, 2)
    for kind in ("sparse", "dense", "blocks"):
        for n in sizes:
            for seed in seeds:
                maps.append(synthetic(kind, seed * 1000 + n, n))
    print(
        f"RTU 9600 8E1, {args.turnaround:g} ms turnaround; per scan: "
        "transactions / registers / wire ms"
    )
    head = f"{'map':<44}" + "".join(f"{s:>22}" for s in STRATEGIES) + f"{'plan ms':>9}"
    print(head)
    print("-" * len(head))
    totals = dict.fromkeys(STRATEGIES, 0.0)
    for label, points, limits in maps:
        cells = []
        for name, strat in STRATEGIES.items():
            n, regs, wire = scan(strat, points, limits, turnaround)
            totals[name] += wire
            cells.append(f"{n:>5} / {regs:>5} / {wire * 1000:>6.0f}")
        t0 = time.perf_counter()
        scan(optimal, points, limits, turnaround)
        plan_ms = (time.perf_counter() - t0) * 1000
        print(f"{label:<44}" + "".join(f"{c:>22}" for c in cells) + f"{plan_ms:>9.2f}")
    print("-" * len(head))
    base = totals["optimal"]
    print(
        "total wire time vs optimal: "
        + ", ".join(f"{k} {v / base:.2f}x" for k, v in totals.items() if base)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
