# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Compiled filter kernels. ``ext/_pyfilters.py`` is the reference twin: keep every formula in
the same order of operations as there so both round identically (the build passes
``-ffp-contract=off`` so the C compiler does not fuse multiply-adds behind our back)."""

from cpython cimport array as carray
from cpython.object cimport Py_SIZE
from libc.stdlib cimport calloc, free

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
    normalize_chains,
    spike_counters,
    state_len,
    window_of,
)
from ext._pyfilters import carry

from ext._kernels cimport (
    C_DEADBAND,
    C_RANGE,
    C_RATE,
    C_SMOOTH,
    C_SPIKE,
    C_TOTAL,
    CE_HELD,
    CE_NOW,
    CQ_BAD,
    CQ_GOOD,
    CQ_STALE,
    CR_NONFINITE,
    CR_RANGE,
    CR_RATE,
    NP,
    NS,
    Sample,
    _deadband,
    _spike,
    _swd,
    _total,
    fabs,
    isfinite,
)


cdef inline bint _is_arr(object o, char* code):
    return type(o) is carray.array and (<carray.array>o).ob_descr.typecode == code[0]


cdef class Bank:
    """Filter chains for a set of slots (points), with their state, run one batch at a time.

    Layout: slot s owns steps ``first[s] .. first[s] + count[s] - 1``; step k has opcode
    ``op[k]``, compiled params ``prm[4k .. 4k+3]``, state ``st[8k .. 8k+7]`` and, for a spike
    step, a ring buffer and a sorted copy at ``ring + woff[k]`` / ``srt + woff[k]``.
    """

    cdef int nslots, nsteps
    cdef int* first
    cdef int* count
    cdef int* op
    cdef int* woff
    cdef double* prm
    cdef double* st
    cdef double* ring
    cdef double* srt
    cdef object _chains

    def __cinit__(self, chains):
        chains = normalize_chains(chains)
        self._chains = chains
        cdef int ns = len(chains)
        cdef int nst = sum(len(c) for c in chains)
        cdef int nw = sum(window_of(s) for c in chains for s in c)
        self.nslots = ns
        self.nsteps = nst
        self.first = <int*>calloc(ns + 1, sizeof(int))
        self.count = <int*>calloc(ns + 1, sizeof(int))
        self.op = <int*>calloc(nst + 1, sizeof(int))
        self.woff = <int*>calloc(nst + 1, sizeof(int))
        self.prm = <double*>calloc(NP * nst + 1, sizeof(double))
        self.st = <double*>calloc(NS * nst + 1, sizeof(double))
        self.ring = <double*>calloc(nw + 1, sizeof(double))
        self.srt = <double*>calloc(nw + 1, sizeof(double))
        if not (self.first and self.count and self.op and self.woff and self.prm and self.st
                and self.ring and self.srt):
            raise MemoryError()
        cdef int s, k = 0, w = 0, i
        for s in range(ns):
            self.first[s] = k
            self.count[s] = len(chains[s])
            for step in chains[s]:
                self.op[k] = step[0]
                for i in range(NP):
                    self.prm[NP * k + i] = step[1][i]
                self.woff[k] = w
                w += window_of(step)
                k += 1

    def __dealloc__(self):
        free(self.first)
        free(self.count)
        free(self.op)
        free(self.woff)
        free(self.prm)
        free(self.st)
        free(self.ring)
        free(self.srt)

    @property
    def n_slots(self):
        return self.nslots

    def chain(self, int slot):
        """The compiled chain of ``slot`` (equal chains mean compatible state)."""
        return self._chains[slot]

    def process(self, slot, t, x, q, y, qo, reason, emit):
        """Run one batch; returns how many readings to forward (EMIT_NOW + EMIT_HELD flags).

        ``slot``: int32, ``t``/``x``/``y``: float64, ``q``/``qo``/``reason``/``emit``: uint8;
        array.array (fast path: no buffer acquisition) or any C-contiguous buffer (NumPy)."""
        cdef Py_ssize_t n
        if (_is_arr(slot, b"i") and _is_arr(t, b"d") and _is_arr(x, b"d") and _is_arr(q, b"B")
                and _is_arr(y, b"d") and _is_arr(qo, b"B") and _is_arr(reason, b"B")
                and _is_arr(emit, b"B")):
            n = Py_SIZE(x)
            if not (Py_SIZE(slot) == Py_SIZE(t) == Py_SIZE(q) == Py_SIZE(y) == Py_SIZE(qo)
                    == Py_SIZE(reason) == Py_SIZE(emit) == n):
                raise ValueError("all arrays must have the same length")
            return self._checked_run(
                n, (<carray.array>slot).data.as_ints, (<carray.array>t).data.as_doubles,
                (<carray.array>x).data.as_doubles, (<carray.array>q).data.as_uchars,
                (<carray.array>y).data.as_doubles, (<carray.array>qo).data.as_uchars,
                (<carray.array>reason).data.as_uchars, (<carray.array>emit).data.as_uchars)
        return self._process_buffers(slot, t, x, q, y, qo, reason, emit)

    def _process_buffers(self, const int[::1] slot, const double[::1] t, const double[::1] x,
                         const unsigned char[::1] q, double[::1] y, unsigned char[::1] qo,
                         unsigned char[::1] reason, unsigned char[::1] emit):
        cdef Py_ssize_t n = x.shape[0]
        if not (slot.shape[0] == t.shape[0] == q.shape[0] == y.shape[0] == qo.shape[0]
                == reason.shape[0] == emit.shape[0] == n):
            raise ValueError("all arrays must have the same length")
        if n == 0:
            return 0
        return self._checked_run(n, &slot[0], &t[0], &x[0], &q[0], &y[0], &qo[0], &reason[0],
                                 &emit[0])

    cdef int _checked_run(self, Py_ssize_t n, const int* slot, const double* t, const double* x,
                          const unsigned char* q, double* y, unsigned char* qo,
                          unsigned char* reason, unsigned char* emit) except -1:
        cdef Py_ssize_t i
        cdef int total
        for i in range(n):
            if not 0 <= slot[i] < self.nslots:
                raise IndexError(f"slot {slot[i]} out of range (bank has {self.nslots})")
        # the GIL stays held: the fast path uses raw pointers into array.array objects that
        # export no buffer, so no other thread may resize them (or touch this bank) meanwhile
        total = self._run(n, slot, t, x, q, y, qo, reason, emit)
        return total

    cdef int _run(self, Py_ssize_t n, const int* slot, const double* t, const double* x,
                  const unsigned char* q, double* y, unsigned char* qo, unsigned char* reason,
                  unsigned char* emit) noexcept nogil:
        cdef Py_ssize_t i
        cdef int s, k, kend, o, qq, total = 0
        cdef Sample smp
        cdef double* stp
        cdef const double* c
        cdef double s2, dt
        for i in range(n):
            s = slot[i]
            smp.v = x[i]
            smp.t = t[i]
            qq = q[i]
            if qq != CQ_GOOD and qq != CQ_STALE:
                qq = CQ_BAD
            smp.q = qq
            smp.r = 0
            smp.e = CE_NOW
            if qq == CQ_GOOD and not isfinite(smp.v):
                smp.q = CQ_BAD
                smp.r = CR_NONFINITE
            k = self.first[s]
            kend = k + self.count[s]
            while k < kend:
                o = self.op[k]
                c = self.prm + NP * k
                stp = self.st + NS * k
                if o == C_RANGE:
                    if smp.q == CQ_GOOD and not (c[0] <= smp.v <= c[1]):
                        smp.q = CQ_BAD
                        smp.r = CR_RANGE
                elif o == C_SPIKE:
                    if smp.q == CQ_GOOD:
                        _spike(&smp, c, stp, self.ring + self.woff[k],
                               self.srt + self.woff[k])
                elif o == C_SMOOTH:
                    if smp.q == CQ_GOOD:
                        if stp[1] != 0.0:
                            s2 = stp[0] + c[0] * (smp.v - stp[0])
                            stp[0] = s2 if isfinite(s2) else smp.v
                        else:
                            stp[0] = smp.v
                            stp[1] = 1.0
                        smp.v = stp[0]
                elif o == C_DEADBAND:
                    _deadband(&smp, c, stp)
                elif o == C_RATE:
                    if smp.q == CQ_GOOD:
                        if stp[2] != 0.0:
                            dt = smp.t - stp[1]
                            if dt > 0.0 and fabs(smp.v - stp[0]) > c[0] * dt:
                                smp.q = CQ_BAD
                                smp.r = CR_RATE
                            else:
                                stp[0] = smp.v
                                stp[1] = smp.t
                        else:
                            stp[0] = smp.v
                            stp[1] = smp.t
                            stp[2] = 1.0
                elif o == C_TOTAL:
                    if smp.q == CQ_GOOD:
                        _total(&smp, c, stp)
                else:
                    _swd(&smp, c, stp)
                if not smp.e & CE_NOW:
                    break
                k += 1
            y[i] = smp.v
            qo[i] = <unsigned char>smp.q
            reason[i] = <unsigned char>smp.r
            emit[i] = <unsigned char>smp.e
            total += (smp.e & CE_NOW) + ((smp.e & CE_HELD) >> 1)
        return total

    def get_state(self, int slot):
        """Flat state of one slot: per step N_STATE doubles, then ring and sorted window."""
        if not 0 <= slot < self.nslots:
            raise IndexError(slot)
        out = []
        cdef int k, i, w, n
        for k in range(self.first[slot], self.first[slot] + self.count[slot]):
            for i in range(NS):
                out.append(self.st[NS * k + i])
            if self.op[k] == C_SPIKE:
                w = <int>self.prm[NP * k]
                n = <int>self.st[NS * k]
                ring = [self.ring[self.woff[k] + i] for i in range(w)]
                out += ring
                out += sorted(ring[:n]) + [0.0] * (w - n)
        return tuple(out)

    def set_state(self, int slot, state):
        """Load a state from ``get_state`` (either implementation); the sorted window is
        rebuilt from the ring, counters out of range are reset."""
        if not 0 <= slot < self.nslots:
            raise IndexError(slot)
        if len(state) != state_len(self._chains[slot]):
            raise ValueError("state does not fit this slot's chain")
        cdef int k, i, w, j = 0, n
        for k in range(self.first[slot], self.first[slot] + self.count[slot]):
            for i in range(NS):
                self.st[NS * k + i] = float(state[j])
                j += 1
            if self.op[k] == C_SPIKE:
                w = <int>self.prm[NP * k]
                st0, st1 = spike_counters(self.st[NS * k], self.st[NS * k + 1], w)
                self.st[NS * k] = st0
                self.st[NS * k + 1] = st1
                n = <int>st0
                ring = [float(v) + 0.0 for v in state[j : j + w]]
                j += 2 * w
                srt = sorted(ring[:n]) + [0.0] * (w - n)
                for i in range(w):
                    self.ring[self.woff[k] + i] = ring[i]
                    self.srt[self.woff[k] + i] = srt[i]

    def reset(self, int slot):
        self.set_state(slot, [0.0] * state_len(self._chains[slot]))

    def carry_state_from(self, old, mapping):
        """Copy state from ``old`` (either implementation): ``mapping[new_slot]`` is the old
        slot or -1. Only slots whose compiled chains are equal are copied; returns how many."""
        return carry(self, old, mapping)
