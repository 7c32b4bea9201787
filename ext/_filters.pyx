# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Compiled filter kernels. ``ext/_pyfilters.py`` is the reference twin: keep every formula in
the same order of operations as there so both round identically (the build passes
``-ffp-contract=off`` so the C compiler does not fuse multiply-adds behind our back)."""

from libc.math cimport fabs, isfinite
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

cdef enum:
    C_RANGE = 1
    C_SPIKE = 2
    C_SMOOTH = 3
    C_DEADBAND = 4
    C_RATE = 5
    C_TOTAL = 6
    C_SWD = 7
    CQ_GOOD = 0
    CQ_BAD = 1
    CQ_STALE = 2
    CR_NONFINITE = 1
    CR_RANGE = 2
    CR_SPIKE = 3
    CR_RATE = 4
    CR_RESET = 5
    CR_NORATE = 6
    CR_REPLACED = 7
    CE_NOW = 1
    CE_HELD = 2
    CE_HOLD = 4
    NP = 4
    NS = 8


cdef struct Sample:
    double v
    double t
    int q
    int r
    int e


cdef inline double _median(const double* s, int n) noexcept nogil:
    cdef int h = n // 2
    if n & 1:
        return s[h]
    return 0.5 * s[h - 1] + 0.5 * s[h]


cdef inline double _mad(const double* s, int n, double m) noexcept nogil:
    # deviations left of the median grow leftwards, right of it rightwards: merge the two
    # sorted runs up to the middle rank instead of sorting
    cdef int p = 0
    cdef int i, j, k, h = n // 2
    cdef double a, b, dl, dr
    a = 0.0
    b = 0.0
    dl = 0.0
    dr = 0.0
    while p < n and s[p] < m:
        p += 1
    i = p - 1
    j = p
    for k in range(h + 1):
        if i >= 0:
            dl = fabs(s[i] - m)
        if j < n:
            dr = fabs(s[j] - m)
        a = b
        if j >= n or (i >= 0 and dl <= dr):
            b = dl
            i -= 1
        else:
            b = dr
            j += 1
    if n & 1:
        return b
    return 0.5 * a + 0.5 * b


cdef inline int _count_lt(const double* s, int n, double v) noexcept nogil:
    cdef int k, c = 0
    for k in range(n):
        c += s[k] < v
    return c


cdef inline int _count_le(const double* s, int n, double v) noexcept nogil:
    cdef int k, c = 0
    for k in range(n):
        c += s[k] <= v
    return c


cdef extern from *:
    """
    /* compare-exchange as min/max instructions: a C ternary pair compiles to a compare and a
       branch, which random data mispredicts half the time. Inputs are finite and free of -0.0
       (the window canonicalizes zeros), where these agree exactly with the Python twin. */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #define CE_CX(x, y) do { __m128d _a = _mm_set_sd(x), _b = _mm_set_sd(y); \
        x = _mm_cvtsd_f64(_mm_min_sd(_a, _b)); y = _mm_cvtsd_f64(_mm_max_sd(_a, _b)); } while (0)
    #else
    #define CE_CX(x, y) do { double _a = (x), _b = (y); \
        x = __builtin_fmin(_a, _b); y = __builtin_fmax(_a, _b); } while (0)
    #endif
    static inline void cityedge_sort3(const double* r, double* o) {
        double a = r[0], b = r[1], c = r[2];
        CE_CX(a, b); CE_CX(b, c); CE_CX(a, b);
        o[0] = a; o[1] = b; o[2] = c;
    }
    /* optimal 9-comparator network for 5 inputs (Knuth, TAOCP 5.3.4) */
    static inline void cityedge_sort5(const double* r, double* o) {
        double a = r[0], b = r[1], c = r[2], d = r[3], e = r[4];
        CE_CX(a, b); CE_CX(d, e); CE_CX(c, e); CE_CX(c, d); CE_CX(a, d);
        CE_CX(a, c); CE_CX(b, e); CE_CX(b, d); CE_CX(b, c);
        o[0] = a; o[1] = b; o[2] = c; o[3] = d; o[4] = e;
    }
    """
    void cityedge_sort3(const double* r, double* o) noexcept nogil
    void cityedge_sort5(const double* r, double* o) noexcept nogil


cdef inline void _sort_small(const double* ring, double* a, int w) noexcept nogil:
    if w == 3:
        cityedge_sort3(ring, a)
    else:
        cityedge_sort5(ring, a)


cdef inline void _sorted_replace(double* srt, const double* ring, int n, int w, int head,
                                 double v0) noexcept nogil:
    cdef int j, k, p
    cdef double old
    if n == w:
        old = ring[head]
        if v0 > old:
            j = _count_lt(srt, n, old)
            p = _count_le(srt, n, v0) - 1
            for k in range(j, p):
                srt[k] = srt[k + 1]
            srt[p] = v0
        elif v0 < old:
            j = _count_lt(srt, n, old)
            p = _count_le(srt, n, v0)
            k = j
            while k > p:
                srt[k] = srt[k - 1]
                k -= 1
            srt[p] = v0
    else:
        p = _count_le(srt, n, v0)
        k = n
        while k > p:
            srt[k] = srt[k - 1]
            k -= 1
        srt[p] = v0


cdef inline void _reject(Sample* x, const double* c, double m) noexcept nogil:
    if c[3] != 0.0:
        x.v = m
        x.r = CR_REPLACED
    else:
        x.q = CQ_BAD
        x.r = CR_SPIKE


cdef inline void _spike(Sample* x, const double* c, double* st, double* ring,
                        double* srt) noexcept nogil:
    # the window holds v + 0.0 (turns -0.0 into +0.0): equal values are then identical bits,
    # so any order-statistic algorithm gives the twin's results exactly
    cdef int w = <int>c[0]
    cdef int n = <int>st[0]
    cdef int head = <int>st[1]
    cdef int h = w // 2
    cdef int j, k, p, cnt
    cdef double old, v0 = x.v + 0.0, m, mad, thr, dev
    if w == 5 or w == 3:
        # the default windows: sort a copy of the ring with a sorting network (min/max only,
        # no data-dependent branches for the predictor to miss); no sorted copy is kept
        if n < w:
            n += 1
            st[0] = n
        ring[head] = v0
        head += 1
        if head == w:
            head = 0
        st[1] = head
        if n < w:
            return
        _sort_small(ring, srt, w)
        m = srt[h]
    else:
        _sorted_replace(srt, ring, n, w, head, v0)
        if n < w:
            n += 1
            st[0] = n
        ring[head] = v0
        head += 1
        if head == w:
            head = 0
        st[1] = head
        if n < w:
            return
    if w & 1:
        # |v - m| > k*MAD  <=>  more than h of the k*|s - m| are below |v - m| (k*d is monotone
        # in d, so it commutes with taking the order statistic): no MAD selection needed
        if w != 5 and w != 3:
            m = srt[h]
        dev = fabs(x.v - m)
        if not dev > c[2]:
            return
        cnt = 0
        for k in range(w):
            cnt += c[1] * fabs(srt[k] - m) < dev
        if cnt <= h:
            return
    else:
        m = _median(srt, w)
        mad = _mad(srt, w, m)
        thr = c[1] * mad
        if thr < c[2]:
            thr = c[2]
        if not fabs(x.v - m) > thr:
            return
    _reject(x, c, m)


cdef inline void _deadband(Sample* x, const double* c, double* st) noexcept nogil:
    cdef bint send = False
    cdef double ch
    if st[3] == 0.0 or x.q != <int>st[2] or x.t < st[1] or x.t - st[1] >= c[2]:
        send = True
    else:
        ch = fabs(x.v - st[0])
        if c[0] > 0.0 or c[1] > 0.0:
            if (c[0] > 0.0 and ch > c[0]) or (c[1] > 0.0 and ch > c[1] * fabs(st[0])):
                send = True
        elif ch > 0.0:
            send = True
    if send:
        st[0] = x.v
        st[1] = x.t
        st[2] = x.q
        st[3] = 1.0
    else:
        x.e &= ~CE_NOW


cdef inline void _total(Sample* x, const double* c, double* st) noexcept nogil:
    cdef bint first = False
    cdef double dtt = 0.0, inc, d, wi, v = x.v
    if st[3] == 0.0:
        st[0] = v
        st[1] = v
        st[2] = x.t
        st[3] = 1.0
        inc = 0.0
        first = True
    else:
        d = v - st[0]
        if d >= 0.0:
            inc = d
        else:
            wi = (v + c[0]) - st[0]
            if wi >= 0.0 and wi < c[1]:
                inc = wi
            else:
                inc = v if v > 0.0 else 0.0
                x.r = CR_RESET
        st[1] = st[1] + inc
        dtt = x.t - st[2]
        st[0] = v
        st[2] = x.t
    if c[2] == 0.0:
        x.v = st[1]
    elif c[2] == 1.0:
        x.v = inc
    elif first or not dtt > 0.0:
        x.q = CQ_BAD
        x.r = CR_NORATE
    else:
        x.v = inc / dtt


cdef inline void _swd(Sample* x, const double* c, double* st) noexcept nogil:
    cdef double dev = c[0], mode = st[6], dt, s, lo, hi, v = x.v, t = x.t
    if x.q != CQ_GOOD:
        if mode == 2.0:
            x.e |= CE_HELD
        st[6] = 0.0
        return
    if mode == 0.0:
        st[0] = t
        st[1] = v
        st[6] = 1.0
        return
    dt = t - st[0]
    if not dt > 0.0 or dt >= c[1] or (mode == 2.0 and not t > st[2]):
        if mode == 2.0:
            x.e |= CE_HELD
        st[0] = t
        st[1] = v
        st[6] = 1.0
        return
    if mode == 2.0:
        s = (v - st[1]) / dt
        if st[4] <= s <= st[5]:
            lo = (v - dev - st[1]) / dt
            hi = (v + dev - st[1]) / dt
            if lo > st[4]:
                st[4] = lo
            if hi < st[5]:
                st[5] = hi
            st[2] = t
            st[3] = v
            x.e = (x.e & ~CE_NOW) | CE_HOLD
            return
        x.e |= CE_HELD
        st[0] = st[2]
        st[1] = st[3]
        dt = t - st[0]
    st[4] = (v - dev - st[1]) / dt
    st[5] = (v + dev - st[1]) / dt
    st[2] = t
    st[3] = v
    st[6] = 2.0
    x.e = (x.e & ~CE_NOW) | CE_HOLD


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

    def process(self, const int[::1] slot, const double[::1] t, const double[::1] x,
                const unsigned char[::1] q, double[::1] y, unsigned char[::1] qo,
                unsigned char[::1] reason, unsigned char[::1] emit):
        """Run one batch; returns how many readings to forward (EMIT_NOW + EMIT_HELD flags)."""
        cdef Py_ssize_t n = x.shape[0], i
        cdef int s, k, kend, o, qq, total = 0
        cdef Sample smp
        cdef double* stp
        cdef const double* c
        cdef double s2, dt
        if not (slot.shape[0] == t.shape[0] == q.shape[0] == y.shape[0] == qo.shape[0]
                == reason.shape[0] == emit.shape[0] == n):
            raise ValueError("all arrays must have the same length")
        for i in range(n):
            if not 0 <= slot[i] < self.nslots:
                raise IndexError(f"slot {slot[i]} out of range (bank has {self.nslots})")
        with nogil:
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
