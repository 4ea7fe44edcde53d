"""Compiled (numba) kernels over rows of logits: the energy (max-shifted logsumexp in float64, with a per-row
factor and the bias, for the activation-shaping detectors) and the row argmax (GEN). Loaded with :mod:`._select`
by :func:`._shaping.compiled_kernels`; every kernel releases the GIL (:func:`._row_threads.run_rows` splits rows
over threads).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._select import _JIT

__all__ = ["energy_rows", "argmax_rows"]


@numba.njit(inline="always", **_JIT)
def _max(x):
    """max of a 1-D array (n ≥ 1) with four independent running maxima (a float max reduction does not
    vectorise, four chains at least overlap)."""
    n = x.shape[0]
    m0 = x[0]
    m1 = m0
    m2 = m0
    m3 = m0
    j = 0
    while j + 4 <= n:
        m0 = x[j] if x[j] > m0 else m0
        m1 = x[j + 1] if x[j + 1] > m1 else m1
        m2 = x[j + 2] if x[j + 2] > m2 else m2
        m3 = x[j + 3] if x[j + 3] > m3 else m3
        j += 4
    while j < n:
        m0 = x[j] if x[j] > m0 else m0
        j += 1
    m0 = m0 if m0 > m1 else m1
    m2 = m2 if m2 > m3 else m3
    return m0 if m0 > m2 else m2


@numba.njit(**_JIT)
def argmax_rows(a, out):
    """out[i] = the index of the first largest entry of row i of ``a`` (B, n), n ≥ 1, as ``torch.argmax``
    (rows without NaN): the row's max, then a scan for its first position."""
    n = a.shape[1]
    for i in range(a.shape[0]):
        row = a[i]
        m = _max(row)
        j = 0
        while j < n - 1 and row[j] != m:
            j += 1
        out[i] = j


_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that n · _LN2_HI is exact for |n| < 2^11 (fdlibm)
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e+00


@numba.njit(inline="always", **_JIT)
def _exp_nonpositive(x):
    """e^x for x ≤ 0 in float64, vectorisable (no libm call): x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^r by its
    Taylor polynomial of degree 13 (truncation < 1e-18), 2^n from the exponent bits; relative error below 1e-15
    for x ≥ −40 (the terms that can matter next to e^0), ~1e-14 near −700. Below −700 it returns 0: such a term
    cannot change a sum that contains e^0 = 1, and cutting there keeps every intermediate a normal number
    (subnormal arithmetic is slow)."""
    y = x if x > -700.0 else -700.0
    n = math.floor(y * _INV_LN2 + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    scale = np.int64((np.int64(n) + 1023) << 52).view(np.float64)
    return p * scale if x > -700.0 else 0.0


@numba.njit(**_JIT)
def energy_rows(logits, factor, bias, use_factor, out):
    """out[i] = −log Σ_c exp(f_i · logits[i, c] + bias[c]) in float64 (f_i = ``factor[i]`` if ``use_factor``,
    else 1), max-shifted like ``torch.logsumexp``; ``bias`` float64."""
    classes = logits.shape[1]
    u = np.empty(classes)
    for i in range(logits.shape[0]):
        row = logits[i]
        f = factor[i] if use_factor else 1.0
        for c in range(classes):
            u[c] = f * row[c] + bias[c]
        m = _max(u)
        total = 0.0
        for c in range(classes):
            total += _exp_nonpositive(u[c] - m)
        out[i] = -(m + math.log(total))
