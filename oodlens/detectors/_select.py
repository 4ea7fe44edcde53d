"""Compiled (numba) kernels of the activation-shaping detectors: a per-row top-k selection fused with the
shaping (ASH, SCALE) and the element-wise clip of VRA / ReAct. The kernels over rows of logits (energy, argmax)
are in :mod:`._logit_kernels`.

Imported lazily by :mod:`._shaping` (this module imports numba; decorating compiles nothing: a kernel compiles on
its first call for the argument types given, ``cache=True`` keeps the machine code on disk). Every kernel
releases the GIL, so :func:`._row_threads.run_rows` splits rows over Python threads.

Selection (:func:`topk_rows`) counts instead of reordering. With count(m) = #{j : x_j ≥ m}, non-increasing in m,
a bracket lo < hi with count(lo) ≥ k > count(hi) starts at the row's minimum and just above its maximum. Each step
probes one m inside it and costs one branch-free, vectorised counting pass over the row, which stays in L1 cache:
first the previous row's threshold and a secant step with a running estimate of the density of values there
(rows of one data set are alike), then regula falsi with the Illinois correction; a step that does not halve the
bracket, measured in the order-preserving integer keys of the floats, is followed by a bisection of the keys, so
a row takes at most about two passes per key bit whatever its values. The search stops when count(m) = k, so
{x ≥ m} is exactly the k largest; when count(hi) = k − 1, the k-th largest is the largest entry below hi (one
integer max pass); when count(lo) = k + 1, all but the smallest entry ≥ lo (one min pass; if that entry has
copies it is the k-th largest itself); or when lo and hi are adjacent floats (t = lo). The last pass writes the
shaped row, counts the kept set (more than k entries: a tie at the k-th value t, flagged for the caller) and sums
it. On 40 000 × 512 rectified Gaussian rows this takes about 4 counting passes per row on average. The kept sets
and order statistics are those of a sort (the tests compare with ``numpy.partition``).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["topk_rows", "clip_rows", "STATS", "PRUNE", "BINARISE"]

#: fast-math flags that let sums be reassociated, i.e. vectorised (float64 sums of a row may so differ from
#: numpy's in the last bits); no "no NaN / no inf" flags: a bracket's width may overflow to inf (float64)
_FASTMATH = {"nsz", "contract", "reassoc"}
_JIT = dict(nogil=True, cache=True, fastmath=_FASTMATH, boundscheck=False, error_model="numpy")

#: shaping modes of :func:`topk_rows`: only the sums (SCALE); zero all but the k largest (ASH-P, ASH-S);
#: s1/k on the k largest, else 0 (ASH-B)
STATS, PRUNE, BINARISE = 0, 1, 2


@numba.njit(**_JIT)
def _bit_range(irow):
    """Min / max of a row's bit patterns as signed integers (for non-negative floats: of the values)."""
    bmin = irow[0]
    bmax = irow[0]
    for j in range(irow.shape[0]):
        b = irow[j]
        bmin = min(bmin, b)
        bmax = max(bmax, b)
    return bmin, bmax


@numba.njit(**_JIT)
def _sum_and_bit_range(row, irow):
    """Σ row (float64) and :func:`_bit_range`, in one pass."""
    total = 0.0
    bmin = irow[0]
    bmax = irow[0]
    for j in range(row.shape[0]):
        total += row[j]
        b = irow[j]
        bmin = min(bmin, b)
        bmax = max(bmax, b)
    return total, bmin, bmax


@numba.njit(**_JIT)
def _key_range(irow, shift, low_bits):
    """Min / max of the order-preserving keys bits ^ ((bits >> shift) & low_bits) (rows with negative values)."""
    b = irow[0]
    kmin = b ^ ((b >> shift) & low_bits)
    kmax = kmin
    for j in range(irow.shape[0]):
        b = irow[j]
        key = b ^ ((b >> shift) & low_bits)
        kmin = min(kmin, key)
        kmax = max(kmax, key)
    return kmin, kmax


@numba.njit(**_JIT)
def _count_ge(row, m):
    """#{j : row_j ≥ m}; int32 arithmetic (numba would widen to int64), so 8 lanes per 256-bit vector."""
    c = np.int32(0)
    for j in range(row.shape[0]):
        c = np.int32(c + np.int32(row[j] >= m))
    return c


@numba.njit(**_JIT)
def _max_bits_below(irow, bound, none):
    """The largest bit pattern < ``bound`` (``none`` if there is none); ``bound``, ``none`` of irow's dtype."""
    best = none
    for j in range(irow.shape[0]):
        b = irow[j]
        best = max(best, b if b < bound else none)
    return best


@numba.njit(**_JIT)
def _min_bits_from(irow, bound, none):
    """The smallest bit pattern ≥ ``bound`` (``none`` if there is none); ``bound``, ``none`` of irow's dtype."""
    best = none
    for j in range(irow.shape[0]):
        b = irow[j]
        best = min(best, b if b >= bound else none)
    return best


@numba.njit(**_JIT)
def _finish_row(row, lo, mode, sums, value, out):
    """The last pass over a row, with the kept set {x ≥ lo}: (its size, its sum in float64 if ``sums``, else 0).
    PRUNE writes x there, else 0, into ``out``; BINARISE writes ``value`` there, else 0; STATS writes nothing."""
    count = np.int32(0)
    kept = 0.0
    zero = row[0] - row[0]
    if mode == PRUNE and sums:
        for j in range(row.shape[0]):
            v = row[j]
            keep = v >= lo
            h = v if keep else zero
            out[j] = h
            kept += h
            count = np.int32(count + np.int32(keep))
    elif mode == PRUNE:
        for j in range(row.shape[0]):
            v = row[j]
            keep = v >= lo
            out[j] = v if keep else zero
            count = np.int32(count + np.int32(keep))
    elif mode == BINARISE:
        z = value - value
        for j in range(row.shape[0]):
            keep = row[j] >= lo
            out[j] = value if keep else z
            count = np.int32(count + np.int32(keep))
    elif sums:  # STATS
        for j in range(row.shape[0]):
            v = row[j]
            keep = v >= lo
            kept += v if keep else 0.0
            count = np.int32(count + np.int32(keep))
    else:
        count = _count_ge(row, lo)
    if mode == BINARISE and sums:
        for j in range(row.shape[0]):
            v = row[j]
            kept += v if v >= lo else 0.0
    return count, kept


@numba.njit(**_JIT)
def topk_rows(a, ai, k, mode, sums, out, s1, s2, thr, tied, scratch_f, scratch_i):
    """For each row x of ``a`` (B, n), C-contiguous float32 / float64 (``ai``: the same memory as int32 / int64):

    * ``thr[i]``: the kept set is {x ≥ thr[i]}, which is the k largest, or, where ``tied[i]`` is set, the
      entries ≥ the k-th largest value t = ``thr[i]``, of which there are more than k (a tie at t);
    * if ``sums``: ``s1[i]`` = Σ_j x_j and ``s2[i]`` = the sum of the k largest, both float64 (else not written);
    * ``mode`` PRUNE: ``out[i]`` = x on the kept set, else 0; BINARISE: s1/k (in x's dtype) there, else 0;
      STATS: ``out`` is not touched (it may have no rows).

    ``scratch_f`` (1,) float and its int view ``scratch_i`` convert values to keys and back.
    """
    n = a.shape[1]
    shift = scratch_i.itemsize * 8 - 1
    low_bits = scratch_i[0] ^ scratch_i[0]
    low_bits -= 1
    low_bits ^= low_bits << shift  # 0x7f…f: key(bits) = bits ^ ((bits >> shift) & low_bits), an involution
    scratch_i[0] = -1
    no_bits = scratch_i[0]  # −1 and the largest value in irow's own integer type (numba would widen literals)
    scratch_i[0] = low_bits
    max_bits = scratch_i[0]
    need_total = sums or mode == BINARISE
    warm = False  # the previous rows' threshold and density of values there (the first two probes)
    prev_t = 0.0
    density = 0.0
    for i in range(a.shape[0]):
        row = a[i]
        irow = ai[i]
        total = 0.0
        if need_total:
            total, bmin, bmax = _sum_and_bit_range(row, irow)
        else:
            bmin, bmax = _bit_range(irow)
        unsigned = bmin >= 0  # no sign bit set (so no −0.0): the keys are the bits
        if unsigned:
            klo = bmin
            khi = bmax
        else:
            klo, khi = _key_range(irow, shift, low_bits)
        scratch_i[0] = khi ^ ((khi >> shift) & low_bits)
        top = scratch_f[0]  # the maximum: the first probe when k = 1
        khi += 1
        if khi == 0:  # the maximum is −0.0, and key 0 (+0.0) compares equal to it: go one key further
            khi = 1
        scratch_i[0] = klo ^ ((klo >> shift) & low_bits)
        lo = scratch_f[0]
        scratch_i[0] = khi ^ ((khi >> shift) & low_bits)
        hi = scratch_f[0]
        c_lo = n  # count(lo)
        c_hi = 0  # count(hi)
        g_lo = c_lo - k - 0.5  # count − (k + ½), whose root is sought: > 0 at lo, < 0 at hi
        g_hi = c_hi - k - 0.5
        side = 0  # which end the last probe replaced (Illinois: halve the other end's g when it repeats)
        bisect = False
        width = np.float64(khi) - np.float64(klo)  # in float64: a difference of int64 keys can overflow
        step = 0
        c_first = 0
        m_first = lo
        while c_lo != k and klo + 1 < khi:
            if unsigned and c_hi == k - 1:
                # the k-th largest is the largest entry below hi: one max pass, and the search is over
                scratch_i[0] = khi
                klo = _max_bits_below(irow, scratch_i[0], no_bits)
                scratch_i[0] = klo
                lo = scratch_f[0]
                break
            if unsigned and c_lo == k + 1:
                # one entry too many: unless the smallest entry ≥ lo has copies, the rest are the k largest
                scratch_i[0] = klo
                klo = _min_bits_from(irow, scratch_i[0], max_bits) + 1
                scratch_i[0] = klo
                lo = scratch_f[0]
                break
            km = klo
            if k == 1 and step == 0:
                m = top
                km = khi - 1
            elif warm and step < 2:
                if step == 0:
                    m64 = prev_t
                elif side == 1:
                    m64 = np.float64(lo) + g_lo / density
                else:
                    m64 = np.float64(hi) + g_hi / density
                scratch_f[0] = m64
                m = scratch_f[0]
                km = scratch_i[0]
                km = km ^ ((km >> shift) & low_bits)
            elif not bisect:
                m64 = np.float64(lo) + (np.float64(hi) - np.float64(lo)) * (g_lo / (g_lo - g_hi))
                scratch_f[0] = m64
                m = scratch_f[0]
                km = scratch_i[0]
                km = km ^ ((km >> shift) & low_bits)
            if km <= klo or km >= khi:  # not strictly inside (rounding, or a warm probe outside this row's range)
                bisect = True
            if bisect:
                km = (klo >> 1) + (khi >> 1) + (klo & khi & 1)  # ⌊(klo + khi) / 2⌋ without overflow
                scratch_i[0] = km ^ ((km >> shift) & low_bits)
                m = scratch_f[0]
            c = _count_ge(row, m)
            if step == 0:
                c_first = c
                m_first = m
            elif step == 1 and c != c_first and m != m_first:
                # entries per unit value near the threshold, from the first two probes (a running mean over rows)
                d = (c_first - c) / (np.float64(m) - np.float64(m_first))
                if d > 0.0:
                    density = d if density == 0.0 else 0.7 * density + 0.3 * d
            if c >= k:
                lo = m
                klo = km
                c_lo = c
                g_lo = c - k - 0.5
                if side == 1:
                    g_hi *= 0.5
                side = 1
            else:
                hi = m
                khi = km
                c_hi = c
                g_hi = c - k - 0.5
                if side == -1:
                    g_lo *= 0.5
                side = -1
            step += 1
            # after the two warm probes, a step that did not halve the key range is followed by a bisection
            new_width = np.float64(khi) - np.float64(klo)
            bisect = step > 2 and not bisect and new_width > 0.5 * width
            width = new_width
        warm = density > 0.0
        prev_t = np.float64(lo)
        value = total / k
        count, kept = _finish_row(row, lo, mode, sums, value, out[i] if mode != STATS else row)
        if count < k:  # after the min pass: the smallest entry had copies, so it is the k-th largest (tied)
            klo -= 1
            scratch_i[0] = klo
            lo = scratch_f[0]
            count, kept = _finish_row(row, lo, mode, sums, value, out[i] if mode != STATS else row)
        thr[i] = lo
        tied[i] = count > k
        if sums:
            s1[i] = total
            # Σ of the k largest: the kept sum less the surplus copies of the tied value (none unless tied)
            s2[i] = kept - (count - k) * np.float64(lo)


@numba.njit(**_JIT)
def clip_rows(a, lower, upper, upper_gamma, gamma, out):
    """VRA / ReAct shaping of a (B, D) block into ``out``, in the input's precision: per column j,
    h = 0 where x < lower_j, else x + γ; then upper_j where h > upper_j + γ (``upper_gamma``), else h.
    (ReAct: lower = −inf, γ = 0, i.e. min(x, upper).)"""
    d = a.shape[1]
    for i in range(a.shape[0]):
        row = a[i]
        o = out[i]
        for j in range(d):
            v = row[j]
            h = v + gamma
            h = gamma - gamma if v < lower[j] else h
            o[j] = upper[j] if h > upper_gamma[j] else h
