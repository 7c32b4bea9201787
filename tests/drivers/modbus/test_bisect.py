"""Exploring a rejected read (drivers/modbus/bisect.py) and the learned-exclusion bookkeeping
(drivers/modbus/exclusions.py), without sockets: a device is a set of rejected registers."""

from __future__ import annotations

import random
from collections.abc import Collection

import pytest

from drivers.core.profile import DataType, Limits, Point, Table
from drivers.modbus.bisect import Findings, explore
from drivers.modbus.exclusions import LearnedExclusions
from drivers.modbus.planner import plan_reads


def run(
    points: list[Point], rejects: Collection[int], *, deep: bool = False, max_len: int = 125
) -> tuple[Findings, list[tuple[int, int]], set[str]]:
    """Drive the explorer against a device that rejects any read touching ``rejects`` (or
    longer than ``max_len``). Returns the findings, the reads tried and the points decoded."""
    gen = explore(points, deep=deep)
    tried: list[tuple[int, int]] = []
    decoded: set[str] = set()
    try:
        probe = next(gen)
        while True:
            tried.append((probe.start, probe.count))
            span = range(probe.start, probe.start + probe.count)
            ok = probe.count <= max_len and not any(a in rejects for a in span)
            if ok:
                decoded |= {p.name for p in probe.points}
            probe = gen.send(ok)
    except StopIteration as stop:
        return stop.value, tried, decoded


def pt(name: str, address: int, type_: DataType = DataType.UINT16) -> Point:
    return Point(name=name, address=address, type=type_, table=Table.INPUT)


def test_a_hole_between_halves_is_learned_register_by_register() -> None:
    points = [pt("a", 0), pt("b", 1), pt("c", 10), pt("d", 11)]
    f, _, decoded = run(points, {5, 6})
    assert f.rejected == {5, 6}  # not 2..9: exactly what the device rejects
    assert decoded == {"a", "b", "c", "d"} and not f.unreadable and f.cap is None


def test_a_half_that_needed_a_further_split_does_not_widen_the_hole() -> None:
    """Issue 15, point 2: both halves of a rejected span read (one only after a further
    split), and the old rule excluded the whole gap between them."""
    points = [pt("a", 0), pt("b", 4), pt("c", 8), pt("d", 12)]
    f, _, decoded = run(points, {6})  # inside the left half's own gap (4..8)
    assert f.rejected == {6}
    assert decoded == {"a", "b", "c", "d"}


def test_a_rejected_point_is_unreadable_and_its_registers_learned() -> None:
    points = [pt("a", 0), pt("bad", 2, DataType.FLOAT32), pt("c", 4)]
    f, _, decoded = run(points, {3})
    assert [p.name for p in f.unreadable] == ["bad"]
    assert f.rejected == {3}  # register 2 reads on its own
    assert decoded == {"a", "c"}


def test_a_device_rejecting_everything_costs_one_pass_and_teaches_nothing() -> None:
    points = [pt(f"p{i}", 2 * i) for i in range(8)]
    f, tried, decoded = run(points, set(range(100)))
    assert not f.answered and not decoded
    assert f.rejected == set()  # nothing learned: a device fault, not a register map
    assert len(tried) == 2 * 8 - 2  # the point halves, no register-level probing
    assert len(f.unreadable) == 8


def test_deep_explores_registers_even_when_no_half_reads() -> None:
    """The device answered other reads of this poll: learn exactly here too."""
    f, _, _ = run([pt("a", 0), pt("b", 1)], {0, 1}, deep=True)
    assert f.rejected == {0, 1}


def test_bits_of_one_register_stay_together() -> None:
    points = [
        Point(name=f"b{i}", address=7, type=DataType.BIT, bit=i, table=Table.HOLDING)
        for i in range(4)
    ]
    f, tried, decoded = run([*points, pt("x", 9)], {8})
    assert decoded == {"b0", "b1", "b2", "b3", "x"} and f.rejected == {8}
    assert all(n > 0 for _, n in tried)


def test_a_device_refusing_long_reads_gets_a_cap() -> None:
    points = [pt(f"p{i}", i) for i in range(8)]
    f, _, decoded = run(points, set(), max_len=4)
    assert f.rejected == set() and not f.unreadable and decoded == {p.name for p in points}
    assert f.cap == 4


@pytest.mark.parametrize("seed", range(30))
def test_random_register_maps_are_learned_exactly(seed: int) -> None:
    rng = random.Random(seed)
    points = []
    a = 0
    for i in range(rng.randrange(2, 12)):
        a += rng.randrange(0, 6)
        t = rng.choice([DataType.UINT16, DataType.FLOAT32])
        points.append(pt(f"p{i}", a, t))
        a += t.registers
    end = a
    rejects = {r for r in range(end) if rng.random() < 0.15}
    f, _, decoded = run(points, rejects, deep=True)
    lo, hi = points[0].address, end
    # every register of the request is classified, and the rejected ones are exactly those
    assert f.rejected == {r for r in rejects if lo <= r < hi}
    readable = {r for s, e in f.readable for r in range(s, e)}
    assert readable | f.rejected == set(range(lo, hi))
    for p in points:
        bad = any(r in rejects for r in range(p.address, p.address + p.registers))
        assert (p.name in decoded) is not bad


# --- bookkeeping ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def learned(clock: Clock) -> LearnedExclusions:
    return LearnedExclusions(
        "bus b1 device m", reprobe_min=60, reprobe_max=3600, rng=random.Random(2), clock=clock
    )


def test_exclusions_are_per_table_and_described() -> None:
    clock = Clock()
    ex = learned(clock)
    ex.learn_registers(Table.INPUT, [44, 45, 50, 51], 2)
    ex.learn_registers(Table.HOLDING, [44], 2)
    assert ex.registers == {
        (Table.INPUT, 44),
        (Table.INPUT, 45),
        (Table.INPUT, 50),
        (Table.INPUT, 51),
        (Table.HOLDING, 44),
    }
    what = [x.what for x in ex.describe()]
    assert what == [
        "holding register 44 (FC03)",
        "input registers 44..45 (FC04)",
        "input registers 50..51 (FC04)",
    ]
    assert all(x.reason == "exception 2" for x in ex.describe())


def test_reprobe_backs_off_to_about_an_hour_and_forgets_what_reads_again() -> None:
    clock = Clock()
    ex = learned(clock)
    delays = []
    for _ in range(8):
        ex.learn_registers(Table.INPUT, [7], 2)
        (x,) = ex.describe()
        delays.append(x.retry_at - clock.t)
        assert not ex.release_due()  # not yet
        clock.t = x.retry_at
        assert ex.release_due() and not ex.registers  # planned across again: the re-probe
    for d, base in zip(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600], strict=True):
        assert base * 0.8 <= d <= min(3600, base * 1.2)
    ex.readable(Table.INPUT, 0, 10)  # the re-probe read it: a firmware update, say
    ex.learn_registers(Table.INPUT, [7], 2)  # rejected later again: starts over at a minute
    (x,) = ex.describe()
    assert 48 <= x.retry_at - clock.t <= 72


def test_points_and_caps_are_reprobed_too() -> None:
    clock = Clock()
    ex = learned(clock)
    ex.learn_point("p10", 2)
    ex.learn_cap(Table.HOLDING, 16, 3)
    assert ex.points == {"p10"}
    assert ex.limits(Limits()).max_registers == 16
    v = ex.version
    clock.t = 4000
    assert ex.release_due() and ex.version > v
    assert not ex.points and ex.limits(Limits()).max_registers == 125


def test_sdm630_holes_give_the_optimal_plan() -> None:
    """The issue's meter: learned holes equal to what it rejects let the planner find the
    8-request plan (9 with the old whole-gap exclusions)."""
    from drivers.core.library import ProfileLibrary
    from tests.drivers.serial.serial_harness import PROFILES

    prof = ProfileLibrary([PROFILES]).load("eastron/sdm630")
    holes = [44, 45, 50, 51, 54, 55, 58, 59, 64, 65, 68, 69]
    clock = Clock()
    ex = learned(clock)
    ex.learn_registers(Table.INPUT, holes, 2)
    extra = pt("undocumented_40", 40, DataType.FLOAT32)
    for points in (list(prof.points), [*prof.points, extra]):
        plan = plan_reads(points, prof.limits, excluded=ex.registers)
        assert len(plan) == 8, plan
