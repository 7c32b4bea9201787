"""Compiled kernels vs the pure-Python twin: identical outputs, bit for bit, on hostile streams
(NaN, +-inf, huge jumps, counter roll-overs, quality flips, repeated and backwards clocks);
plus properties both must have (batch splitting does not matter; the swinging-door error
bound holds)."""

from __future__ import annotations

import itertools
import math
import random
import struct
from array import array
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from tests.ext.conftest import compiled

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

Chain = list[tuple[int, tuple[float, ...]]]

pos = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)
steps: dict[int, st.SearchStrategy[tuple[int, tuple[float, ...]]]] = {
    OP_RANGE: st.tuples(st.floats(-1e3, 0.0), st.floats(0.0, 1e3)).map(lambda p: (OP_RANGE, p)),
    OP_SPIKE: st.tuples(
        st.integers(3, 20).map(float),
        st.floats(0.5, 5.0),
        st.sampled_from([0.0, 0.5, 10.0]),
        st.sampled_from([0.0, 1.0]),
    ).map(lambda p: (OP_SPIKE, p)),
    OP_SMOOTH: st.floats(0.01, 1.0).map(lambda a: (OP_SMOOTH, (a,))),
    OP_DEADBAND: st.tuples(
        st.sampled_from([0.0, 0.1, 5.0]), st.sampled_from([0.0, 1.0, 20.0]), pos
    ).map(lambda p: (OP_DEADBAND, p)),
    OP_RATE: pos.map(lambda m: (OP_RATE, (m,))),
    OP_TOTAL: st.tuples(
        st.sampled_from([256.0, 65536.0, 2.0**32, math.inf]),
        st.sampled_from([0.05, 0.5, 1.0]),
        st.sampled_from([0.0, 1.0, 2.0]),
    ).map(lambda p: (OP_TOTAL, p)),
    OP_SWD: st.tuples(st.floats(1e-3, 50.0), pos).map(lambda p: (OP_SWD, p)),
}
any_step = st.one_of(*(s for op, s in steps.items() if op != OP_SWD))


@st.composite
def chains(draw: st.DrawFn) -> Chain:
    chain = draw(st.lists(any_step, max_size=4))
    if draw(st.booleans()):
        chain.append(draw(steps[OP_SWD]))
    return chain


values = st.one_of(
    st.floats(-100.0, 100.0),
    st.sampled_from([0.0, -0.0, 1.0, 255.0, 65535.0, 2.0**32 - 1, 1e308, -1e308, 5e-324]),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(0, 2**32).map(float),
)
samples = st.tuples(
    st.sampled_from([0.0, 0.001, 0.5, 1.0, 1.0, 2.0, 30.0, 400.0, -3.0]),  # dt
    values,
    st.sampled_from([0, 0, 0, 0, 0, 1, 2, 9]),  # quality (9: invalid -> bad)
)


def run(
    impl: ModuleType,
    chains_: list[Chain],
    stream: list[tuple[int, float, float, int]],
    batches: int = 1,
) -> tuple[int, bytes, list[bytes]]:
    bank = impl.Bank(chains_)
    t = 1.7e9
    sl, ts, xs, qs = array("i"), array("d"), array("d"), array("B")
    for slot, dt, x, q in stream:
        t += dt
        sl.append(slot)
        ts.append(t)
        xs.append(x)
        qs.append(q)
    n = len(stream)
    y = array("d", bytes(8 * n))
    qo, rc, em = array("B", bytes(n)), array("B", bytes(n)), array("B", bytes(n))
    total = 0
    cuts = [n * k // batches for k in range(batches + 1)]
    for a, b in itertools.pairwise(cuts):
        yb = array("d", bytes(8 * (b - a)))
        qb, rb, eb = (array("B", bytes(b - a)) for _ in range(3))
        total += bank.process(sl[a:b], ts[a:b], xs[a:b], qs[a:b], yb, qb, rb, eb)
        y[a:b], qo[a:b], rc[a:b], em[a:b] = yb, qb, rb, eb
    state = [struct.pack(f"{len(s)}d", *s) for s in map(bank.get_state, range(len(chains_)))]
    return total, y.tobytes() + qo.tobytes() + rc.tobytes() + em.tobytes(), state


def streams(nslots: int) -> Any:
    return st.lists(
        st.builds(lambda s, smp: (s, *smp), st.integers(0, nslots - 1), samples), max_size=120
    )


@pytest.mark.parametrize("op", sorted(steps))
def test_each_kernel_matches_the_twin(op: int) -> None:
    cy = compiled()

    @SETTINGS
    @given(step=steps[op], stream=streams(1))
    def check(step: tuple[int, tuple[float, ...]], stream: list[Any]) -> None:
        assert run(cy, [[step]], stream) == run(py, [[step]], stream)

    check()


@SETTINGS
@given(chains_=st.lists(chains(), min_size=1, max_size=4), data=st.data())
def test_chains_match_the_twin(chains_: list[Chain], data: st.DataObject) -> None:
    cy = compiled()
    stream = data.draw(streams(len(chains_)))
    assert run(cy, chains_, stream) == run(py, chains_, stream)


@SETTINGS
@given(chains_=st.lists(chains(), min_size=1, max_size=3), data=st.data())
def test_batch_boundaries_do_not_matter(chains_: list[Chain], data: st.DataObject) -> None:
    stream = data.draw(streams(len(chains_)))
    k = data.draw(st.integers(2, 5))
    ref = run(py, chains_, stream)
    assert run(py, chains_, stream, batches=k) == ref
    assert run(compiled(), chains_, stream, batches=k) == ref


def test_long_random_streams_match() -> None:
    cy = compiled()
    rnd = random.Random(5)
    chains_: list[Chain] = [
        [
            (OP_RANGE, (-50.0, 50.0)),
            (OP_SPIKE, (5.0, 3.0, 0.0, 0.0)),
            (OP_DEADBAND, (0.5, 0.0, 60.0)),
        ],
        [(OP_SPIKE, (9.0, 2.0, 0.1, 1.0)), (OP_SMOOTH, (0.3,)), (OP_RATE, (20.0,))],
        [(OP_TOTAL, (65536.0, 0.1, 2.0))],
        [(OP_SPIKE, (3.0, 1.0, 0.0, 1.0)), (OP_SWD, (0.5, 100.0))],
        [(OP_SPIKE, (24.0, 3.0, 0.0, 0.0)), (OP_DEADBAND, (0.0, 2.0, 30.0))],
    ]
    stream = []
    for _ in range(20000):
        r = rnd.random()
        x = (
            rnd.choice([math.nan, math.inf, -1e308, -0.0, 0.0])
            if r < 0.02
            else float(rnd.randrange(65536))
            if r < 0.1
            else rnd.gauss(0.0, 20.0)
        )
        stream.append(
            (
                rnd.randrange(len(chains_)),
                rnd.choice([0.0, 1.0, 1.0, 5.0, -1.0]),
                x,
                rnd.choice([0] * 9 + [1, 2]),
            )
        )
    assert run(cy, chains_, stream, batches=7) == run(py, chains_, stream)


def archived_error(
    impl: ModuleType, ts: list[float], xs: list[float], dev: float, max_interval: float
) -> tuple[int, float]:
    """Run a swinging door; return (archived count, worst interpolation error)."""
    bank = impl.Bank([[(OP_SWD, (dev, max_interval))]])
    n = len(xs)
    y = array("d", bytes(8 * n))
    qo, rc, em = array("B", bytes(n)), array("B", bytes(n)), array("B", bytes(n))
    bank.process(
        array("i", bytes(4 * n)),
        array("d", ts),
        array("d", xs),
        array("B", bytes(n)),
        y,
        qo,
        rc,
        em,
    )
    arch: list[int] = []
    held = -1
    for i in range(n):
        if em[i] & EMIT_HELD:
            arch.append(held)
        if em[i] & EMIT_NOW:
            arch.append(i)
        if em[i] & HELD:
            held = i
    if held > arch[-1]:
        arch.append(held)  # what a final flush would archive
    assert arch == sorted(arch) and arch[0] == 0 and arch[-1] == n - 1
    worst = 0.0
    for a, b in itertools.pairwise(arch):
        slope = (xs[b] - xs[a]) / (ts[b] - ts[a])
        for i in range(a, b + 1):
            worst = max(worst, abs(xs[a] + slope * (ts[i] - ts[a]) - xs[i]))
    return len(arch), worst


@SETTINGS
@given(
    dev=st.floats(0.01, 10.0),
    steps_=st.lists(
        st.tuples(st.floats(0.01, 100.0), st.floats(-20.0, 20.0)), min_size=1, max_size=300
    ),
    max_interval=st.sampled_from([50.0, 1e9]),
)
def test_swinging_door_error_bound(
    dev: float, steps_: list[tuple[float, float]], max_interval: float
) -> None:
    ts, xs = [0.0], [0.0]
    for dt, dx in steps_:
        ts.append(ts[-1] + dt)
        xs.append(xs[-1] + dx)
    for impl in (py, compiled()):
        _, worst = archived_error(impl, ts, xs, dev, max_interval)
        assert worst <= dev * (1 + 1e-9) + 1e-9


def test_swinging_door_compresses_a_noisy_ramp() -> None:
    rnd = random.Random(2)
    ts = [float(i) for i in range(5000)]
    xs = [0.01 * i + rnd.uniform(-0.2, 0.2) for i in range(5000)]
    for impl in (py, compiled()):
        n, worst = archived_error(impl, ts, xs, 0.5, 1e9)
        assert worst <= 0.5 * (1 + 1e-9)
        assert n < 100  # noise within the band costs nothing
