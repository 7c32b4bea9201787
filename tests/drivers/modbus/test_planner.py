"""Planner: optimal against two brute-force oracles on random maps, plus the edge cases."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Sequence
from typing import Any

import pytest

from drivers.core.profile import Limits, Point, Table, UndefinedRange
from drivers.modbus.planner import (
    PlanError,
    ReadRequest,
    blocked_points,
    cap_for,
    forbidden_addresses,
    plan_by_interval,
    plan_reads,
    plan_wire_time,
    rtu_weights,
    wire_time,
)

H = Table.HOLDING
_n = itertools.count()


def pt(address: int, type_: str = "uint16", table: str = "holding", **kw: Any) -> Point:
    if table in ("coil", "discrete"):
        type_ = "bool"
        kw = {k: v for k, v in kw.items() if k not in ("bit", "length", "flags")}
    return Point.model_validate(
        {"name": f"p{next(_n)}", "table": table, "address": address, "type": type_, **kw}
    )


def span(p: Point) -> range:
    return range(p.address, p.address + p.registers)


def cost(reqs: Sequence[ReadRequest]) -> tuple[int, int]:
    return len(reqs), sum(r.count for r in reqs)


def window_ok(
    s: int, e: int, pts: Sequence[Point], cap: int, max_gap: int, forbidden: frozenset[int]
) -> bool:
    """The rules, stated directly: size, no forbidden address, every unused run <= max_gap
    (unused = not covered by any point lying wholly inside the window)."""
    if e - s > cap or any(a in forbidden for a in range(s, e)):
        return False
    covered: set[int] = set()
    for p in pts:
        if s <= p.address and p.address + p.registers <= e:
            covered.update(span(p))
    run = 0
    for a in range(s, e):
        run = 0 if a in covered else run + 1
        if run > max_gap:
            return False
    return True


def oracle_set_cover(
    points: Sequence[Point],
    limits: Limits,
    excluded: frozenset[tuple[Table, int]],
    weights: tuple[float, float] = (1, 0),
) -> tuple[float, int]:
    """Exact minimum over ANY family of windows covering every point (overlaps allowed) of
    (weighted cost, registers); the default weights make the first component the count."""
    forbidden = forbidden_addresses(limits, excluded)
    total: tuple[float, int] = (0, 0)
    for table in Table:
        pts = [p for p in points if p.table is table]
        if not pts:
            continue
        cap, fb = cap_for(table, limits), forbidden.get(table, frozenset())
        starts = sorted({p.address for p in pts})
        ends = sorted({p.address + p.registers for p in pts})
        windows = []
        for s in starts:
            for e in ends:
                if e > s and window_ok(s, e, pts, cap, limits.max_gap, fb):
                    mask = sum(
                        1 << i
                        for i, p in enumerate(pts)
                        if s <= p.address and p.address + p.registers <= e
                    )
                    windows.append((e - s, mask))

        per_req, per_reg = weights[0], weights[1] / (16 if table.is_bits else 1)

        @functools.cache
        def best(uncovered: int) -> tuple[float, int]:
            if not uncovered:
                return (0, 0)
            low = uncovered & -uncovered
            out: tuple[float, int] = (1e18, 10**9)
            for size, mask in windows:  # noqa: B023 - evaluated inside this loop iteration
                if mask & low:
                    sub = best(uncovered & ~mask)
                    out = min(out, (sub[0] + per_req + per_reg * size, sub[1] + size))  # noqa: B023
            return out

        found = best((1 << len(pts)) - 1)
        total = (total[0] + found[0], total[1] + found[1])
    return total


def oracle_contiguous(
    points: Sequence[Point], limits: Limits, excluded: frozenset[tuple[Table, int]]
) -> tuple[int, int]:
    """Minimum over all partitions of the address-sorted points into contiguous groups."""
    forbidden = forbidden_addresses(limits, excluded)
    total = (0, 0)
    for table in Table:
        pts = sorted(
            (p for p in points if p.table is table), key=lambda p: (p.address, -p.registers)
        )
        if not pts:
            continue
        cap, fb = cap_for(table, limits), forbidden.get(table, frozenset())
        found = (10**9, 10**9)
        for cuts in itertools.product((False, True), repeat=len(pts) - 1):
            groups, cur = [], [pts[0]]
            for p, cut in zip(pts[1:], cuts, strict=True):
                if cut:
                    groups.append(cur)
                    cur = []
                cur.append(p)
            groups.append(cur)
            c = (0, 0)
            for g in groups:
                s, e = min(p.address for p in g), max(p.address + p.registers for p in g)
                if not window_ok(s, e, pts, cap, limits.max_gap, fb):
                    break
                c = (c[0] + 1, c[1] + e - s)
            else:
                found = min(found, c)
        total = (total[0] + found[0], total[1] + found[1])
    return total


def check_valid(
    reqs: Sequence[ReadRequest],
    points: Sequence[Point],
    limits: Limits,
    excluded: frozenset[tuple[Table, int]] = frozenset(),
) -> None:
    forbidden = forbidden_addresses(limits, excluded)
    seen: list[Point] = []
    for r in reqs:
        pts = [p for p in points if p.table is r.table]
        assert window_ok(
            r.start,
            r.end,
            pts,
            cap_for(r.table, limits),
            limits.max_gap,
            forbidden.get(r.table, frozenset()),
        )
        assert (
            r.function_code
            == {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}[r.table]
        )
        for p in r.points:
            assert p.table is r.table and r.start <= p.address
            assert p.address + p.registers <= r.end  # never split
        seen.extend(r.points)
    assert sorted(id(p) for p in seen) == sorted(id(p) for p in points)  # each exactly once
    keys = [(r.function_code, r.start) for r in reqs]
    assert keys == sorted(keys)


def random_case(rng: random.Random, n: int) -> tuple[list[Point], Limits, frozenset[Any]]:
    kinds = ["uint16", "uint16", "int32", "float64", "bit", "string"]
    points = []
    for _ in range(n):
        table = rng.choice(["holding"] * 4 + ["input", "coil"])
        kind = rng.choice(kinds)
        extra: dict[str, Any] = {}
        if kind == "bit":
            extra["bit"] = rng.randrange(16)
        if kind == "string":
            extra["length"] = rng.randint(1, 5)
        points.append(pt(rng.randrange(40), kind, table, **extra))
    undefined = tuple(
        UndefinedRange(
            table=rng.choice([H, Table.INPUT, Table.COIL]),
            start=(s := rng.randrange(45)),
            end=s + rng.randrange(3),
        )
        for _ in range(rng.randrange(3))
    )
    limits = Limits(
        max_registers=rng.choice([4, 6, 8, 12, 125]),
        max_bits=rng.choice([3, 10, 2000]),
        max_gap=rng.choice([0, 1, 2, 3, 5, 16]),
        undefined=undefined,
    )
    excluded = frozenset(
        (rng.choice([H, Table.INPUT]), rng.randrange(45)) for _ in range(rng.randrange(3))
    )
    return points, limits, excluded


@pytest.mark.parametrize("seed", range(8))
def test_optimal_against_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        points, limits, excluded = random_case(rng, rng.randint(1, 10))
        blocked = blocked_points(points, limits, excluded=excluded)
        if blocked:
            with pytest.raises(PlanError) as exc:
                plan_reads(points, limits, excluded=excluded)
            assert exc.value.point in {p.name for p in blocked}
            points = [p for p in points if p not in blocked]
        reqs = plan_reads(points, limits, excluded=excluded)
        check_valid(reqs, points, limits, excluded)
        assert cost(reqs) == oracle_set_cover(points, limits, excluded)
        assert cost(reqs) == oracle_contiguous(points, limits, excluded)


@pytest.mark.parametrize("seed", range(3))
def test_weighted_objective_against_brute_force(seed: int) -> None:
    rng = random.Random(100 + seed)
    ct = 11 / 9600
    for _ in range(100):
        points, limits, excluded = random_case(rng, rng.randint(1, 10))
        points = [p for p in points if p not in blocked_points(points, limits, excluded=excluded)]
        weights = rtu_weights(ct, rng.choice([0.0, 0.002, 0.005]))
        reqs = plan_reads(points, limits, excluded=excluded, weights=weights)
        check_valid(reqs, points, limits, excluded)
        got = sum(
            weights[0] + weights[1] * (r.count / 16 if r.table.is_bits else r.count) for r in reqs
        )
        want, _ = oracle_set_cover(points, limits, excluded, weights)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        # and the lexicographic optimum can never beat it on its own objective
        lex = plan_reads(points, limits, excluded=excluded)
        lex_cost = sum(
            weights[0] + weights[1] * (r.count / 16 if r.table.is_bits else r.count) for r in lex
        )
        assert got <= lex_cost + 1e-12


def test_wire_weights_trade_a_request_for_a_long_gap() -> None:
    # a 16-register hole costs 36.7 ms at 9600 8E1; a second request only 27.9 ms
    pts = [pt(0), pt(17)]
    assert [(r.start, r.count) for r in plan_reads(pts, Limits())] == [(0, 18)]
    reqs = plan_reads(pts, Limits(), weights=rtu_weights(11 / 9600, 0.005))
    assert [(r.start, r.count) for r in reqs] == [(0, 1), (17, 1)]
    assert plan_wire_time(reqs, 11 / 9600) < plan_wire_time(plan_reads(pts, Limits()), 11 / 9600)
    with pytest.raises(ValueError, match="weights"):
        plan_reads(pts, Limits(), weights=(0, 0))


def test_run_longer_than_125_never_splits_a_float_at_124_125() -> None:
    pts = [pt(a) for a in range(124)] + [pt(124, "float32")] + [pt(a) for a in range(126, 200)]
    reqs = plan_reads(pts, Limits())
    assert [(r.start, r.count) for r in reqs] == [(0, 124), (124, 76)]
    assert pts[124] in reqs[1].points
    check_valid(reqs, pts, Limits())


def test_overlapping_and_duplicate_points_share_reads() -> None:
    flags = pt(10, "bitfield", flags={0: "a", 1: "b"})
    bits = [pt(10, "bit", bit=b) for b in range(4)]
    total, low = pt(20, "uint32"), pt(21, "uint16")
    dup_a, dup_b = pt(22, "int16"), pt(22, "int16")
    pts = [*bits, total, flags, low, dup_b, dup_a]
    reqs = plan_reads(pts, Limits())
    assert [(r.start, r.count) for r in reqs] == [(10, 13)]
    assert sorted(map(id, reqs[0].points)) == sorted(map(id, pts))
    assert len({*reqs, *plan_reads(pts, Limits())}) == 1  # hashable despite the flags dict
    check_valid(reqs, pts, Limits())


def test_partially_overlapping_points_wider_than_cap_together() -> None:
    a, b = pt(0, "float64"), pt(2, "float64")  # 0..3 and 2..5: 6 registers together
    reqs = plan_reads([a, b], Limits(max_registers=4))
    assert [(r.start, r.count, r.points) for r in reqs] == [(0, 4, (a,)), (2, 4, (b,))]


def test_undefined_ranges_are_never_read() -> None:
    pts = [pt(0), pt(5), pt(0, table="input"), pt(5, table="input")]
    limits = Limits(undefined=(UndefinedRange(table=H, start=2, end=3),))
    reqs = plan_reads(pts, limits)
    assert [(r.table, r.start, r.count) for r in reqs] == [
        (H, 0, 1),
        (H, 5, 1),
        (Table.INPUT, 0, 6),
    ]
    with pytest.raises(PlanError, match="covers address 3") as exc:
        plan_reads([pt(3, "int32", name="lamp")], limits)
    assert (exc.value.point, exc.value.reason) == (
        "lamp",
        "covers address 3, which is undefined or rejected by the device",
    )


def test_per_device_cap() -> None:
    pts = [pt(a) for a in range(30)]
    reqs = plan_reads(pts, Limits(max_registers=10))
    assert [(r.start, r.count) for r in reqs] == [(0, 10), (10, 10), (20, 10)]
    with pytest.raises(PlanError, match="needs 12 registers but a request may read at most 10"):
        plan_reads([pt(0, "string", length=12)], Limits(max_registers=10))


def test_coils_and_discretes_bit_caps() -> None:
    coils = [pt(a, table="coil") for a in range(2500)]
    reqs = plan_reads(coils, Limits())
    assert [(r.function_code, r.start, r.count) for r in reqs] == [(1, 0, 2000), (1, 2000, 500)]
    disc = [pt(a, table="discrete") for a in range(0, 300, 3)]
    reqs = plan_reads(disc, Limits(max_bits=100, max_gap=2))
    assert [r.function_code for r in reqs] == [2, 2, 2]
    assert cost(reqs) == (3, 298 - 2 * 2)  # every split skips one 2-bit hole
    check_valid(reqs, disc, Limits(max_bits=100, max_gap=2))


def test_max_gap_zero_reads_contiguous_runs_only() -> None:
    pts = [pt(0), pt(1), pt(3), pt(4, "int32"), pt(7)]
    reqs = plan_reads(pts, Limits(max_gap=0))
    assert [(r.start, r.count) for r in reqs] == [(0, 2), (3, 3), (7, 1)]


def test_excluded_registers_split_requests() -> None:
    pts = [pt(0), pt(2), pt(4, "int32")]
    assert [(r.start, r.count) for r in plan_reads(pts, Limits())] == [(0, 6)]
    reqs = plan_reads(pts, Limits(), excluded=frozenset({(H, 1), (Table.INPUT, 3)}))
    assert [(r.start, r.count) for r in reqs] == [(0, 1), (2, 4)]
    excl = frozenset({(H, 5)})
    assert blocked_points(pts, Limits(), excluded=excl) == (pts[2],)
    with pytest.raises(PlanError):
        plan_reads(pts, Limits(), excluded=excl)


def test_beats_greedy_gap_fill_on_registers() -> None:
    # greedy extends [0..4] (5 registers) then needs [5]; optimal reads [0] and [4..5]
    pts = [pt(0), pt(4), pt(5)]
    reqs = plan_reads(pts, Limits(max_registers=5, max_gap=3))
    assert [(r.start, r.count) for r in reqs] == [(0, 1), (4, 2)]


def test_empty_and_interval_groups() -> None:
    assert plan_reads([], Limits()) == ()
    fast, slow, other = pt(0, interval=1), pt(1), pt(2, interval=60)
    plans = plan_by_interval([slow, fast, other], Limits(), 5.0)
    assert list(plans) == [1, 5.0, 60]
    assert [r.points for r in plans[5.0]] == [(slow,)]


def test_wire_time_rtu_and_tcp() -> None:
    ct = 11 / 9600  # 9600 baud 8E1
    reg = ReadRequest(H, 0, 10, ())
    assert wire_time(reg, ct) == pytest.approx((8 + 5 + 20 + 7) * ct + 0.005)
    bits = ReadRequest(Table.COIL, 0, 9, ())
    assert wire_time(bits, ct, turnaround=0) == pytest.approx((8 + 5 + 2 + 7) * ct)
    assert wire_time(reg, 0.0, turnaround=0.002) == 0.002
    assert plan_wire_time([reg, bits], ct) == pytest.approx(
        wire_time(reg, ct) + wire_time(bits, ct)
    )
    assert reg.offset_of(pt(3)) == 3


def test_large_map_is_fast() -> None:
    rng = random.Random(1)
    pts = [
        pt(rng.randrange(5000), rng.choice(["uint16", "float32", "float64"])) for _ in range(400)
    ]
    pts = [p for p in pts if p.address + p.registers <= 65536]
    reqs = plan_reads(pts, Limits(max_gap=8))
    check_valid(reqs, pts, Limits(max_gap=8))
