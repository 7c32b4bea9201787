"""Each kernel on hand-made cases from its definition, for both implementations."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from array import array
from collections.abc import Sequence
from types import ModuleType

import pytest

import ext
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
    R_NONFINITE,
    R_NORATE,
    R_RANGE,
    R_RATE,
    R_REPLACED,
    R_RESET,
    R_SPIKE,
)
from tests.ext.conftest import compiled

G, B, S = 0, 1, 2

Sample = tuple[float, float, int]  # t, x, quality
Out = tuple[float, int, int, int]  # y, quality, reason, emit


def run_bank(bank: object, slots: Sequence[int], samples: Sequence[Sample]) -> list[Out]:
    n = len(samples)
    y = array("d", bytes(8 * n))
    qo, rc, em = array("B", bytes(n)), array("B", bytes(n)), array("B", bytes(n))
    bank.process(  # type: ignore[attr-defined]
        array("i", slots),
        array("d", [s[0] for s in samples]),
        array("d", [s[1] for s in samples]),
        array("B", [s[2] for s in samples]),
        y,
        qo,
        rc,
        em,
    )
    return list(zip(y, qo, rc, em, strict=True))


def run(
    impl: ModuleType,
    chain: Sequence[tuple[int, tuple[float, ...]]],
    xs: Sequence[float],
    *,
    ts: Sequence[float] | None = None,
    qs: Sequence[int] | None = None,
) -> list[Out]:
    ts = ts if ts is not None else [float(i) for i in range(len(xs))]
    qs = qs if qs is not None else [G] * len(xs)
    bank = impl.Bank([chain])
    return run_bank(bank, [0] * len(xs), list(zip(ts, xs, qs, strict=True)))


def values(out: list[Out]) -> list[float]:
    return [o[0] for o in out]


def emitted(out: list[Out]) -> list[int]:
    return [i for i, o in enumerate(out) if o[3] & EMIT_NOW]


def test_ext_exports_an_implementation() -> None:
    assert ext.IMPLEMENTATION in ("cython", "python")
    assert ext.Bank is ext.impl.Bank


@pytest.mark.parametrize("no_ext", ["1", "0"])
def test_ext_picks_the_compiled_module_unless_told_not_to(no_ext: str) -> None:
    if no_ext == "0":
        compiled()  # fails under CITYEDGE_REQUIRE_EXT=1 when the build is missing
    env = {**os.environ, "CITYEDGE_NO_EXT": no_ext}
    code = "import ext; print(ext.IMPLEMENTATION, ext.Bank.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == (["python", "ext._pyfilters"] if no_ext == "1" else ["cython", "ext._filters"])


# --- common rules --------------------------------------------------------------------------


def test_non_finite_good_becomes_bad_before_the_chain(impl: ModuleType) -> None:
    out = run(impl, [(OP_RANGE, (-10, 10))], [math.nan, math.inf, -math.inf, 1.0])
    assert [o[1:3] for o in out] == [(B, R_NONFINITE)] * 3 + [(G, 0)]
    assert math.isnan(out[0][0]) and out[1][0] == math.inf  # raw kept


def test_non_finite_bad_or_stale_keeps_its_quality(impl: ModuleType) -> None:
    out = run(impl, [(OP_RANGE, (-10, 10))], [math.nan, 99.0, 5.0], qs=[S, B, 7])
    assert [o[1:3] for o in out] == [(S, 0), (B, 0), (B, 0)]  # unknown code 7 -> bad


def test_empty_chain_passes_through(impl: ModuleType) -> None:
    out = run(impl, [], [1.0, 2.0])
    assert out == [(1.0, G, 0, EMIT_NOW), (2.0, G, 0, EMIT_NOW)]


# --- range ---------------------------------------------------------------------------------


def test_range_marks_out_of_range_bad_and_keeps_raw(impl: ModuleType) -> None:
    out = run(impl, [(OP_RANGE, (0.0, 100.0))], [0.0, 100.0, 100.5, -1e-9, 50.0])
    assert out == [
        (0.0, G, 0, 1),
        (100.0, G, 0, 1),
        (100.5, B, R_RANGE, 1),
        (-1e-9, B, R_RANGE, 1),
        (50.0, G, 0, 1),
    ]


def test_range_does_not_overwrite_an_earlier_reason(impl: ModuleType) -> None:
    out = run(impl, [(OP_RANGE, (0.0, 1.0))], [5.0], qs=[B])
    assert out == [(5.0, B, 0, 1)]


# --- spike ---------------------------------------------------------------------------------


def test_hampel_rejects_the_textbook_outlier(impl: ModuleType) -> None:
    # window [1,2,3,4,100]: median 3, MAD 1, threshold 3*1.4826 -> 100 is a spike
    out = run(impl, [(OP_SPIKE, (5, 3.0, 0.0, 0))], [1.0, 2.0, 3.0, 4.0, 100.0, 5.0])
    assert [o[1:3] for o in out] == [(G, 0)] * 4 + [(B, R_SPIKE), (G, 0)]
    assert out[4][0] == 100.0  # raw kept


def test_hampel_replace_substitutes_the_median(impl: ModuleType) -> None:
    out = run(impl, [(OP_SPIKE, (5, 3.0, 0.0, 1))], [1.0, 2.0, 3.0, 4.0, 100.0])
    assert out[4] == (3.0, G, R_REPLACED, EMIT_NOW)


def test_hampel_warm_up_never_rejects(impl: ModuleType) -> None:
    out = run(impl, [(OP_SPIKE, (5, 3.0, 0.0, 0))], [0.0, 1e9, -1e9, 0.0])
    assert all(o[1] == G for o in out)


def test_hampel_accepts_a_level_shift_after_half_a_window(impl: ModuleType) -> None:
    out = run(impl, [(OP_SPIKE, (5, 3.0, 0.0, 0))], [0.0] * 5 + [10.0] * 3)
    assert [o[1] for o in out[5:]] == [B, B, G]


def test_hampel_min_dev_tolerates_noise_on_a_flat_window(impl: ModuleType) -> None:
    chain = [(OP_SPIKE, (5, 3.0, 0.5, 0))]
    out = run(impl, chain, [1.0] * 5 + [1.4, 1.6])
    assert [o[1] for o in out[5:]] == [G, B]


def test_hampel_even_and_large_windows(impl: ModuleType) -> None:
    # even window: median is the mean of the middle two
    out = run(impl, [(OP_SPIKE, (4, 3.0, 0.0, 1))], [1.0, 2.0, 3.0, 90.0])
    assert out[3] == (2.5, G, R_REPLACED, EMIT_NOW)
    xs = [float(i % 3) for i in range(17)] + [50.0, 1.0]
    out = run(impl, [(OP_SPIKE, (17, 3.0, 0.0, 0))], xs)
    assert [o[1] for o in out[17:]] == [B, G]


def test_hampel_ignores_bad_samples(impl: ModuleType) -> None:
    out = run(impl, [(OP_SPIKE, (3, 3.0, 0.0, 0))], [1.0, 1.0, 500.0, 1.0, 9.0], qs=[G, G, S, G, G])
    assert out[2] == (500.0, S, 0, EMIT_NOW)
    assert out[4][1:3] == (B, R_SPIKE)  # the stale 500 never entered the window


# --- smoothing -----------------------------------------------------------------------------


def test_exponential_smoothing(impl: ModuleType) -> None:
    out = run(impl, [(OP_SMOOTH, (0.5,))], [0.0, 10.0, 10.0, 99.0, 10.0], qs=[G, G, G, B, G])
    assert values(out) == [0.0, 5.0, 7.5, 99.0, 8.75]


def test_smoothing_recovers_from_overflow(impl: ModuleType) -> None:
    out = run(impl, [(OP_SMOOTH, (0.5,))], [-1.7e308, 1.7e308])
    assert values(out) == [-1.7e308, 1.7e308]  # s + a*(x - s) overflows: reseeded with x


# --- deadband ------------------------------------------------------------------------------


def test_deadband_absolute_heartbeat_and_quality_change(impl: ModuleType) -> None:
    chain = [(OP_DEADBAND, (1.0, 0.0, 10.0))]
    ts = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 14.0, 15.0, 15.5]
    xs = [0.0, 0.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5]
    qs = [G, G, G, G, B, G, G, G, G]
    out = run(impl, chain, xs, ts=ts, qs=qs)
    # 0 first, 2 moved 1.5 > 1, 4 quality change, 5 quality back, 7 heartbeat (15 - 5 >= 10)
    assert emitted(out) == [0, 2, 4, 5, 7]


def test_deadband_percent(impl: ModuleType) -> None:
    out = run(impl, [(OP_DEADBAND, (0.0, 10.0, 1e9))], [100.0, 105.0, 110.0, 111.0, 121.0])
    assert emitted(out) == [0, 3]  # 10 % of 100: 110 is not beyond, 111 is; 121-111 < 11.1


def test_deadband_without_thresholds_reports_changes_only(impl: ModuleType) -> None:
    out = run(impl, [(OP_DEADBAND, (0.0, 0.0, 1e9))], [1.0, 1.0, 2.0, 2.0, 1.0])
    assert emitted(out) == [0, 2, 4]


def test_deadband_reports_when_the_clock_goes_back(impl: ModuleType) -> None:
    out = run(impl, [(OP_DEADBAND, (5.0, 0.0, 100.0))], [1.0, 1.0, 1.0], ts=[50.0, 60.0, 10.0])
    assert emitted(out) == [0, 2]


def test_suppressed_sample_skips_later_steps(impl: ModuleType) -> None:
    chain = [(OP_DEADBAND, (5.0, 0.0, 100.0)), (OP_SMOOTH, (0.5,))]
    out = run(impl, chain, [0.0, 1.0, 10.0])
    assert emitted(out) == [0, 2]
    assert out[2][0] == 5.0  # the smoother never saw the suppressed 1.0


# --- rate of change ------------------------------------------------------------------------


def test_rate_limit(impl: ModuleType) -> None:
    chain = [(OP_RATE, (1.0,))]
    ts = [0.0, 1.0, 2.0, 3.0, 4.0, 8.0]
    out = run(impl, chain, [0.0, 0.5, 5.0, 1.0, 5.0, 5.0], ts=ts)
    assert [o[1:3] for o in out] == [(G, 0), (G, 0), (B, R_RATE), (G, 0), (B, R_RATE), (G, 0)]
    assert out[2][0] == 5.0


def test_rate_resyncs_on_repeated_timestamp(impl: ModuleType) -> None:
    out = run(impl, [(OP_RATE, (1.0,))], [0.0, 100.0, 100.5], ts=[0.0, 0.0, 1.0])
    assert [o[1] for o in out] == [G, G, G]


# --- totalizer -----------------------------------------------------------------------------

M16 = 65536.0


def test_totalizer_unwraps_rollover_and_detects_reset(impl: ModuleType) -> None:
    xs = [65000.0, 65500.0, 100.0, 50.0, 80.0]
    out = run(impl, [(OP_TOTAL, (M16, 0.1, 0))], xs)
    assert values(out) == [65000.0, 65500.0, 65636.0, 65686.0, 65716.0]
    assert [o[1:3] for o in out] == [(G, 0)] * 3 + [(G, R_RESET), (G, 0)]


def test_totalizer_delta_and_rate(impl: ModuleType) -> None:
    xs = [65000.0, 65500.0, 100.0]
    assert values(run(impl, [(OP_TOTAL, (M16, 0.1, 1))], xs)) == [0.0, 500.0, 136.0]
    out = run(impl, [(OP_TOTAL, (M16, 0.1, 2))], xs, ts=[0.0, 10.0, 12.0])
    assert out[0] == (65000.0, B, R_NORATE, EMIT_NOW)  # no rate yet: bad, raw kept
    assert values(out)[1:] == [50.0, 68.0]


def test_totalizer_ignores_bad_samples(impl: ModuleType) -> None:
    out = run(impl, [(OP_TOTAL, (M16, 0.1, 0))], [10.0, 0.0, 20.0], qs=[G, B, G])
    assert values(out) == [10.0, 0.0, 20.0]
    assert out[2][2] == 0  # the bad 0 was not taken for a reset


# --- swinging door -------------------------------------------------------------------------


def test_swinging_door_holds_a_line_and_archives_the_corner(impl: ModuleType) -> None:
    xs = [float(i) for i in range(11)] + [0.0]
    out = run(impl, [(OP_SWD, (0.5, 1e9))], xs)
    assert out[0][3] == EMIT_NOW
    assert all(o[3] == HELD for o in out[1:11])
    # the drop closes the door: the held corner (t=10) is archived first, 0.0 becomes held
    assert out[11][3] == EMIT_HELD | HELD


def test_swinging_door_max_interval_and_bad_sample(impl: ModuleType) -> None:
    out = run(impl, [(OP_SWD, (0.5, 3.0))], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], qs=[G, G, G, G, G, B])
    assert [o[3] for o in out] == [
        EMIT_NOW,
        HELD,
        HELD,
        EMIT_HELD | EMIT_NOW,
        HELD,
        EMIT_HELD | EMIT_NOW,
    ]


# --- bank mechanics ------------------------------------------------------------------------


def test_slots_are_independent_and_interleave(impl: ModuleType) -> None:
    bank = impl.Bank([[(OP_SMOOTH, (0.5,))], [(OP_TOTAL, (M16, 0.1, 1))]])
    out = run_bank(bank, [0, 1, 0, 1], [(0, 0.0, G), (0, 5.0, G), (1, 10.0, G), (1, 7.0, G)])
    assert values(out) == [0.0, 0.0, 5.0, 2.0]


def test_state_carries_over_for_equal_chains_only(impl: ModuleType) -> None:
    sm = [(OP_SMOOTH, (0.5,))]
    old = impl.Bank([sm, [(OP_SMOOTH, (0.25,))]])
    run_bank(old, [0, 1], [(0, 8.0, G), (0, 8.0, G)])
    new = impl.Bank([[(OP_SMOOTH, (0.5,))], [(OP_SMOOTH, (0.5,))], sm])
    assert new.carry_state_from(old, [0, 1, -1]) == 1  # slot 1 changed alpha: fresh
    out = run_bank(new, [0, 1, 2], [(1, 0.0, G)] * 3)
    assert values(out) == [4.0, 0.0, 0.0]


def test_state_round_trips_between_implementations(impl: ModuleType) -> None:
    import ext._pyfilters as py

    chain = [(OP_SPIKE, (5, 3.0, 0.0, 0)), (OP_DEADBAND, (0.5, 0.0, 60.0))]
    a = py.Bank([chain])
    run_bank(a, [0] * 6, [(float(i), float(i % 3), G) for i in range(6)])
    b = impl.Bank([chain])
    assert b.carry_state_from(a, [0]) == 1
    assert b.get_state(0) == a.get_state(0)


@pytest.mark.parametrize(
    ("chain", "match"),
    [
        ([(99, ())], "unknown filter opcode"),
        ([(OP_SWD, (1.0, 10.0)), (OP_RANGE, (0.0, 1.0))], "swd must be the last"),
        ([(OP_RANGE, (2.0, 1.0))], "min <= max"),
        ([(OP_SPIKE, (2, 3.0, 0.0, 0))], "window"),
        ([(OP_SMOOTH, (0.0,))], "alpha"),
        ([(OP_TOTAL, (0.0, 0.1, 0))], "modulus"),
        ([(OP_RANGE, (math.nan, 1.0))], "NaN"),
    ],
)
def test_invalid_chains_are_refused(
    impl: ModuleType, chain: list[tuple[int, tuple[float, ...]]], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        impl.Bank([chain])


def test_process_validates_shapes_and_slots(impl: ModuleType) -> None:
    bank = impl.Bank([[]])
    with pytest.raises(IndexError):
        run_bank(bank, [1], [(0.0, 1.0, G)])
    one, two = array("d", [0.0]), array("d", [0.0, 0.0])
    b1 = array("B", [0])
    with pytest.raises(ValueError, match="same length"):
        bank.process(array("i", [0]), one, two, b1, one, b1, b1, b1)
    assert bank.get_state(0) == ()


def test_any_contiguous_buffer_is_accepted(impl: ModuleType) -> None:
    # array.array takes the fast path; other buffers (memoryview here, NumPy in practice) the
    # typed-memoryview path: both give the same answer
    chain = [(OP_SMOOTH, (0.5,)), (OP_DEADBAND, (1.0, 0.0, 60.0))]
    xs = [0.0, 4.0, 4.0, 9.0]
    ref = run(impl, chain, xs)
    bank = impl.Bank([chain])
    n = len(xs)
    y = array("d", bytes(8 * n))
    qo, rc, em = array("B", bytes(n)), array("B", bytes(n)), array("B", bytes(n))
    ins = (array("i", bytes(4 * n)), array("d", range(n)), array("d", xs), array("B", bytes(n)))
    bank.process(*(memoryview(a) for a in (*ins, y, qo, rc, em)))
    assert list(zip(y, qo, rc, em, strict=True)) == ref
    assert bank.process(*(array(c) for c in "iddBdBBB")) == 0  # empty batch


def test_both_modules_export_the_same_api() -> None:
    import ext._pyfilters as py

    cy = compiled()
    for name in py.__all__:
        assert hasattr(cy, name), name
        if name != "Bank":
            assert getattr(cy, name) == getattr(py, name), name
    for meth in ("process", "get_state", "set_state", "reset", "chain", "carry_state_from"):
        assert callable(getattr(cy.Bank, meth)) and callable(getattr(py.Bank, meth))
