"""Pure-Python twin of ``ext/_filters.pyx``: the reference implementation.

Same API, same results bit for bit (the differential tests compare the raw bytes of every
output). Every formula here is written exactly as in the Cython module, in the same order of
operations, so both round identically; change both together. The semantics of each kernel are
documented in docs/FILTERS.md.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort_right
from collections.abc import MutableSequence, Sequence
from typing import Any

from ext._common import (
    EMIT_HELD,
    EMIT_NOW,
    HELD,
    MAX_WINDOW,
    N_PARAMS,
    N_STATE,
    OP_DEADBAND,
    OP_NAMES,
    OP_RANGE,
    OP_RATE,
    OP_SMOOTH,
    OP_SPIKE,
    OP_SWD,
    OP_TOTAL,
    Q_BAD,
    Q_GOOD,
    Q_STALE,
    R_NONE,
    R_NONFINITE,
    R_NORATE,
    R_RANGE,
    R_RATE,
    R_REPLACED,
    R_RESET,
    R_SPIKE,
    REASON_NAMES,
    Step,
    normalize_chains,
    spike_counters,
    state_len,
    window_of,
)

__all__ = [
    "EMIT_HELD",
    "EMIT_NOW",
    "HELD",
    "MAX_WINDOW",
    "N_PARAMS",
    "N_STATE",
    "OP_DEADBAND",
    "OP_NAMES",
    "OP_RANGE",
    "OP_RATE",
    "OP_SMOOTH",
    "OP_SPIKE",
    "OP_SWD",
    "OP_TOTAL",
    "Q_BAD",
    "Q_GOOD",
    "Q_STALE",
    "REASON_NAMES",
    "R_NONE",
    "R_NONFINITE",
    "R_NORATE",
    "R_RANGE",
    "R_RATE",
    "R_REPLACED",
    "R_RESET",
    "R_SPIKE",
    "Bank",
]

_isfinite = math.isfinite


class _Step:
    __slots__ = ("c0", "c1", "c2", "c3", "op", "ring", "srt", "st", "w")

    def __init__(self, step: Step) -> None:
        self.op = step[0]
        self.c0, self.c1, self.c2, self.c3 = step[1]
        self.st = [0.0] * N_STATE
        self.w = window_of(step)
        self.ring = [0.0] * self.w
        self.srt: list[float] = []  # the valid part of the sorted window


def _median(s: Sequence[float], n: int) -> float:
    h = n // 2
    if n & 1:
        return s[h]
    return 0.5 * s[h - 1] + 0.5 * s[h]


def _spike(sp: _Step, v: float, qq: int, r: int) -> tuple[float, int, int]:
    st = sp.st
    w = sp.w
    n = int(st[0])
    head = int(st[1])
    srt = sp.srt
    # v + 0.0 turns -0.0 into +0.0: equal window values are then identical bits, so the
    # compiled kernel may use any order-statistic algorithm and still match this one exactly
    v0 = v + 0.0
    if n == w:
        del srt[bisect_left(srt, sp.ring[head])]
    else:
        n += 1
    sp.ring[head] = v0
    head += 1
    if head == w:
        head = 0
    insort_right(srt, v0)
    st[0] = float(n)
    st[1] = float(head)
    if n == w:
        m = _median(srt, w)
        mad = _median(sorted([abs(s - m) for s in srt]), w)
        thr = sp.c1 * mad
        thr = max(thr, sp.c2)
        if abs(v - m) > thr:
            if sp.c3 != 0.0:
                v = m
                r = R_REPLACED
            else:
                qq = Q_BAD
                r = R_SPIKE
    return v, qq, r


def _deadband(sp: _Step, v: float, t: float, qq: int, e: int) -> int:
    st = sp.st
    send = False
    if st[3] == 0.0 or qq != int(st[2]) or t < st[1] or t - st[1] >= sp.c2:
        send = True
    else:
        ch = abs(v - st[0])
        if sp.c0 > 0.0 or sp.c1 > 0.0:
            if (sp.c0 > 0.0 and ch > sp.c0) or (sp.c1 > 0.0 and ch > sp.c1 * abs(st[0])):
                send = True
        elif ch > 0.0:
            send = True
    if send:
        st[0] = v
        st[1] = t
        st[2] = float(qq)
        st[3] = 1.0
        return e
    return e & ~EMIT_NOW


def _total(sp: _Step, v: float, t: float, qq: int, r: int) -> tuple[float, int, int]:
    st = sp.st
    first = False
    dtt = 0.0
    if st[3] == 0.0:
        st[0] = v
        st[1] = v
        st[2] = t
        st[3] = 1.0
        inc = 0.0
        first = True
    else:
        d = v - st[0]
        if d >= 0.0:
            inc = d
        else:
            wi = (v + sp.c0) - st[0]
            if wi >= 0.0 and wi < sp.c1:
                inc = wi
            else:
                inc = v if v > 0.0 else 0.0
                r = R_RESET
        st[1] = st[1] + inc
        dtt = t - st[2]
        st[0] = v
        st[2] = t
    out = sp.c2
    if out == 0.0:
        v = st[1]
    elif out == 1.0:
        v = inc
    elif first or not dtt > 0.0:
        qq = Q_BAD
        r = R_NORATE
    else:
        v = inc / dtt
    return v, qq, r


def _swd(sp: _Step, v: float, t: float, qq: int, e: int) -> int:
    st = sp.st
    dev = sp.c0
    mode = st[6]
    if qq != Q_GOOD:
        # bad values never enter the interpolation: close the segment, report at once
        if mode == 2.0:
            e |= EMIT_HELD
        st[6] = 0.0
        return e
    if mode == 0.0:
        st[0] = t
        st[1] = v
        st[6] = 1.0
        return e
    dt = t - st[0]
    if not dt > 0.0 or dt >= sp.c1 or (mode == 2.0 and not t > st[2]):
        if mode == 2.0:
            e |= EMIT_HELD
        st[0] = t
        st[1] = v
        st[6] = 1.0
        return e
    if mode == 2.0:
        s = (v - st[1]) / dt
        if st[4] <= s <= st[5]:
            lo = (v - dev - st[1]) / dt
            hi = (v + dev - st[1]) / dt
            st[4] = max(st[4], lo)
            st[5] = min(st[5], hi)
            st[2] = t
            st[3] = v
            return (e & ~EMIT_NOW) | HELD
        # the door closed: archive the held sample and swing new doors from it
        e |= EMIT_HELD
        st[0] = st[2]
        st[1] = st[3]
        dt = t - st[0]
    st[4] = (v - dev - st[1]) / dt
    st[5] = (v + dev - st[1]) / dt
    st[2] = t
    st[3] = v
    st[6] = 2.0
    return (e & ~EMIT_NOW) | HELD


class Bank:
    """Filter chains for a set of slots (points), with their state, run one batch at a time."""

    def __init__(self, chains: Sequence[Sequence[tuple[int, Sequence[float]]]]) -> None:
        self._chains = normalize_chains(chains)
        self._steps = [[_Step(s) for s in c] for c in self._chains]

    @property
    def n_slots(self) -> int:
        return len(self._chains)

    def chain(self, slot: int) -> tuple[Step, ...]:
        """The compiled chain of ``slot`` (equal chains mean compatible state)."""
        return self._chains[slot]

    def process(
        self,
        slot: Sequence[int],
        t: Sequence[float],
        x: Sequence[float],
        q: Sequence[int],
        y: MutableSequence[float],
        qo: MutableSequence[int],
        reason: MutableSequence[int],
        emit: MutableSequence[int],
    ) -> int:
        """Run one batch; returns how many readings to forward (EMIT_NOW + EMIT_HELD flags)."""
        n = len(x)
        if not len(slot) == len(t) == len(q) == len(y) == len(qo) == len(reason) == len(emit) == n:
            raise ValueError("all arrays must have the same length")
        ns = len(self._steps)
        for i in range(n):
            if not 0 <= slot[i] < ns:
                raise IndexError(f"slot {slot[i]} out of range (bank has {ns})")
        count = 0
        for i in range(n):
            v = x[i]
            tt = t[i]
            qq = q[i]
            if qq not in (Q_GOOD, Q_STALE):
                qq = Q_BAD
            r = R_NONE
            e = EMIT_NOW
            if qq == Q_GOOD and not _isfinite(v):
                qq = Q_BAD
                r = R_NONFINITE
            for sp in self._steps[slot[i]]:
                op = sp.op
                if op == OP_RANGE:
                    if qq == Q_GOOD and not (sp.c0 <= v <= sp.c1):
                        qq = Q_BAD
                        r = R_RANGE
                elif op == OP_SPIKE:
                    if qq == Q_GOOD:
                        v, qq, r = _spike(sp, v, qq, r)
                elif op == OP_SMOOTH:
                    if qq == Q_GOOD:
                        st = sp.st
                        if st[1] != 0.0:
                            s2 = st[0] + sp.c0 * (v - st[0])
                            st[0] = s2 if _isfinite(s2) else v
                        else:
                            st[0] = v
                            st[1] = 1.0
                        v = st[0]
                elif op == OP_DEADBAND:
                    e = _deadband(sp, v, tt, qq, e)
                elif op == OP_RATE:
                    if qq == Q_GOOD:
                        st = sp.st
                        if st[2] != 0.0:
                            dt = tt - st[1]
                            if dt > 0.0 and abs(v - st[0]) > sp.c0 * dt:
                                qq = Q_BAD
                                r = R_RATE
                            else:
                                st[0] = v
                                st[1] = tt
                        else:
                            st[0] = v
                            st[1] = tt
                            st[2] = 1.0
                elif op == OP_TOTAL:
                    if qq == Q_GOOD:
                        v, qq, r = _total(sp, v, tt, qq, r)
                else:  # OP_SWD
                    e = _swd(sp, v, tt, qq, e)
                if not e & EMIT_NOW:
                    break
            y[i] = v
            qo[i] = qq
            reason[i] = r
            emit[i] = e
            count += (e & EMIT_NOW) + ((e & EMIT_HELD) >> 1)
        return count

    def get_state(self, slot: int) -> tuple[float, ...]:
        """Flat state of one slot: per step N_STATE doubles, then ring and sorted window."""
        out: list[float] = []
        for sp in self._steps[slot]:
            out += sp.st
            if sp.w:
                out += sp.ring
                out += sp.srt + [0.0] * (sp.w - len(sp.srt))
        return tuple(out)

    def set_state(self, slot: int, state: Sequence[float]) -> None:
        """Load a state from ``get_state`` (either implementation); the sorted window is
        rebuilt from the ring, counters out of range are reset."""
        if len(state) != state_len(self._chains[slot]):
            raise ValueError("state does not fit this slot's chain")
        k = 0
        for sp in self._steps[slot]:
            sp.st = [float(v) for v in state[k : k + N_STATE]]
            k += N_STATE
            if sp.w:
                sp.st[0], sp.st[1] = spike_counters(sp.st[0], sp.st[1], sp.w)
                sp.ring = [float(v) + 0.0 for v in state[k : k + sp.w]]
                k += 2 * sp.w
                sp.srt = sorted(sp.ring[: int(sp.st[0])])

    def reset(self, slot: int) -> None:
        self.set_state(slot, [0.0] * state_len(self._chains[slot]))

    def carry_state_from(self, old: Any, mapping: Sequence[int]) -> int:
        """Copy state from ``old`` (either implementation): ``mapping[new_slot]`` is the old
        slot or -1. Only slots whose compiled chains are equal are copied; returns how many."""
        return carry(self, old, mapping)


def carry(new: Any, old: Any, mapping: Sequence[int]) -> int:
    if len(mapping) != new.n_slots:
        raise ValueError("mapping needs one entry per slot of the new bank")
    done = 0
    for ns, os_ in enumerate(mapping):
        if 0 <= os_ < old.n_slots and new.chain(ns) == old.chain(os_):
            new.set_state(ns, old.get_state(os_))
            done += 1
    return done
