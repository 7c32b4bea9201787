# Per-step kernels of ext/_filters.pyx, shared as inline functions (a header, in C terms).
# Each mirrors a function of ext/_pyfilters.py operation for operation: change both together.

from libc.math cimport fabs, isfinite

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
