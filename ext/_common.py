"""Codes and chain validation shared by the compiled kernels and their pure-Python twin.

A chain is a sequence of steps ``(opcode, params)``. ``normalize_chain`` validates the user-level
parameters and turns them into four *compiled* doubles per step (derived constants such as
``k * 1.4826`` are computed here, once, in Python, so both implementations use the very same
bits). The opcode values are mirrored by a ``cdef enum`` in ``_filters.pyx``; the differential
tests would catch any drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# opcodes
OP_RANGE = 1  # params: (min, max)
OP_SPIKE = 2  # params: (window, k, min_dev, replace)
OP_SMOOTH = 3  # params: (alpha,)
OP_DEADBAND = 4  # params: (abs, pct, heartbeat_s)
OP_RATE = 5  # params: (max_per_s,)
OP_TOTAL = 6  # params: (modulus, wrap_window, output)  output: 0 total, 1 delta, 2 rate
OP_SWD = 7  # params: (deviation, max_interval_s)

OP_NAMES = {
    OP_RANGE: "range",
    OP_SPIKE: "spike",
    OP_SMOOTH: "smooth",
    OP_DEADBAND: "deadband",
    OP_RATE: "rate",
    OP_TOTAL: "totalizer",
    OP_SWD: "swd",
}

# quality codes (match drivers.core.reading.Quality)
Q_GOOD = 0
Q_BAD = 1
Q_STALE = 2

# reason codes: why a step changed a sample (0: nothing to say)
R_NONE = 0
R_NONFINITE = 1
R_RANGE = 2
R_SPIKE = 3
R_RATE = 4
R_RESET = 5  # totalizer: counter reset / meter replacement detected (quality stays good)
R_NORATE = 6  # totalizer rate output: no previous sample (or no time elapsed) to compute a rate
R_REPLACED = 7  # spike replaced by the window median (quality stays good)

REASON_NAMES: tuple[str | None, ...] = (
    None,
    "not_finite",
    "out_of_range",
    "spike",
    "rate_of_change",
    "counter_reset",
    "no_rate",
    "spike_replaced",
)

# emit flags
EMIT_NOW = 1  # forward this sample
EMIT_HELD = 2  # forward the slot's held sample (swinging door archived it) before this one
HELD = 4  # this sample is now the slot's held sample (swinging door may archive it later)

N_PARAMS = 4
N_STATE = 8
MAX_WINDOW = 255

# hampel: 1.4826 * MAD estimates the standard deviation of normally distributed data
MAD_SCALE = 1.4826

Step = tuple[int, tuple[float, float, float, float]]


def _num(op: int, name: str, v: float) -> float:
    f = float(v)
    if math.isnan(f):
        raise ValueError(f"{OP_NAMES[op]}: {name} must not be NaN")
    return f


def normalize_step(op: int, params: Sequence[float]) -> Step:
    """Validate one step and return its compiled form ``(op, (p0, p1, p2, p3))``."""
    if op not in OP_NAMES:
        raise ValueError(f"unknown filter opcode {op!r}")
    if len(params) > N_PARAMS:
        raise ValueError(f"{OP_NAMES[op]}: at most {N_PARAMS} parameters")
    p = [_num(op, f"parameter {i}", v) for i, v in enumerate(params)]
    p += [0.0] * (N_PARAMS - len(p))
    name = OP_NAMES[op]
    if op == OP_RANGE:
        if len(params) < 2 or p[0] > p[1]:
            raise ValueError(f"{name}: needs (min, max) with min <= max")
        c = (p[0], p[1], 0.0, 0.0)
    elif op == OP_SPIKE:
        w = int(p[0])
        if w != p[0] or not 3 <= w <= MAX_WINDOW:
            raise ValueError(f"{name}: window must be an integer in 3..{MAX_WINDOW}")
        if not (p[1] > 0 and math.isfinite(p[1])) or not (p[2] >= 0) or p[3] not in (0.0, 1.0):
            raise ValueError(f"{name}: needs k > 0, min_dev >= 0, replace in (0, 1)")
        c = (float(w), p[1] * MAD_SCALE, p[2], p[3])
    elif op == OP_SMOOTH:
        if not 0 < p[0] <= 1:
            raise ValueError(f"{name}: alpha must be in (0, 1]")
        c = (p[0], 0.0, 0.0, 0.0)
    elif op == OP_DEADBAND:
        if not (p[0] >= 0 and p[1] >= 0 and p[2] > 0):
            raise ValueError(f"{name}: needs abs >= 0, pct >= 0, heartbeat > 0")
        c = (p[0], p[1] / 100.0, p[2], 0.0)
    elif op == OP_RATE:
        if not p[0] > 0:
            raise ValueError(f"{name}: max_per_s must be > 0")
        c = (p[0], 0.0, 0.0, 0.0)
    elif op == OP_TOTAL:
        if not (p[0] > 0 and 0 <= p[1] <= 1 and p[2] in (0.0, 1.0, 2.0)):
            raise ValueError(f"{name}: needs modulus > 0, 0 <= wrap_window <= 1, output 0/1/2")
        c = (p[0], p[1] * p[0] if p[1] > 0 else 0.0, p[2], 0.0)
    else:  # OP_SWD
        if not (p[0] > 0 and math.isfinite(p[0]) and p[1] > 0):
            raise ValueError(f"{name}: needs deviation > 0 and max_interval > 0")
        c = (p[0], p[1], 0.0, 0.0)
    return (op, c)


def normalize_chain(chain: Sequence[tuple[int, Sequence[float]]]) -> tuple[Step, ...]:
    steps = tuple(normalize_step(int(op), params) for op, params in chain)
    for i, (op, _) in enumerate(steps):
        # the swinging door holds samples back and re-emits them later: nothing may follow it
        if op == OP_SWD and i != len(steps) - 1:
            raise ValueError("swd must be the last step of a chain")
    return steps


def normalize_chains(
    chains: Sequence[Sequence[tuple[int, Sequence[float]]]],
) -> tuple[tuple[Step, ...], ...]:
    return tuple(normalize_chain(c) for c in chains)


def window_of(step: Step) -> int:
    """Ring-buffer length a step needs (spike window), 0 for the others."""
    return int(step[1][0]) if step[0] == OP_SPIKE else 0


def state_len(chain: tuple[Step, ...]) -> int:
    """Length of the flat state vector ``Bank.get_state`` returns for this chain."""
    return sum(N_STATE + 2 * window_of(s) for s in chain)


def spike_counters(n: float, head: float, w: int) -> tuple[float, float]:
    """Sanitize a loaded spike window's fill count and ring index (an index out of range would
    write outside the compiled kernel's buffer). While filling, the ring holds slots 0..n-1."""
    nn = int(n) if 0 <= n <= w else 0
    if nn < w:
        return float(nn), float(nn)
    hh = int(head) if 0 <= head < w else 0
    return float(nn), float(hh)
