"""Compiled (numba) kernels of the streamed pixel metrics: per-threshold count histograms of pixel scores.

A float32 score's bit pattern, with the sign bit flipped for positive numbers and every bit flipped for negative
ones, is an unsigned 32-bit key in the same order as the scores (IEEE 754). Its top ``32 − shift`` bits are the
*coarse* bin (scale-free: a relative width of 2^−(23 − shift) whatever the scores' range); the low ``shift`` bits
are the *fine* bin inside it, so a coarse bin with a fine page counts every distinct float32 score apart.
−0.0 is counted as +0.0 (equal scores). Labels: 0 normal, 1 anomaly, ``ignore`` skipped; pixels outside the
region of interest skipped.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = dict(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@numba.njit(**_JIT)
def _key(s: np.float32) -> np.uint32:
    u = np.uint32(np.float32(s + np.float32(0.0)).view(np.uint32))
    if u >> np.uint32(31):
        return ~u
    return u | np.uint32(0x80000000)


@numba.njit(**_JIT)
def _status(s: np.float32, lab: int, inside: bool, ignore: int) -> int:
    """0: skipped (ignore label, outside the region of interest), 1: counted, 2: NaN score, 3: bad label."""
    if lab == ignore or not inside:
        return 0
    if s != s:
        return 2
    return 3 if lab > 1 else 1


@numba.njit(**_JIT)
def coarse_counts(scores: np.ndarray, labels: np.ndarray, roi: np.ndarray, use_roi: bool, ignore: int, shift: int,
                  counts: np.ndarray, touched: np.ndarray) -> tuple[int, int, int]:
    """Add the valid pixels per coarse bin to ``counts`` (zero on entry), listing each bin that gets its first
    pixel in ``touched``; return (NaN scores, labels not 0 / 1 / ignore, number of touched bins). Run on a
    strided sample of a batch, it tells which bins the batch makes heavy."""
    bad_score = 0
    bad_label = 0
    n_touched = 0
    for i in range(scores.shape[0]):
        st = _status(scores[i], labels[i], not use_roi or roi[i] != 0, ignore)
        bad_score += st == 2
        bad_label += st == 3
        if st == 1:
            b = np.int64(_key(scores[i]) >> np.uint32(shift))
            if counts[b] == 0:
                touched[n_touched] = b
                n_touched += 1
            counts[b] += 1
    return bad_score, bad_label, n_touched


@numba.njit(**_JIT)
def add_pixels(scores: np.ndarray, labels: np.ndarray, roi: np.ndarray, use_roi: bool, ignore: int, shift: int,
               page_of: np.ndarray, coarse: np.ndarray, fine: np.ndarray, sign: int) -> tuple[int, int]:
    """Add (``sign`` = 1) or take out (−1) the valid pixels: in ``fine[page, 2·sub + label]`` where their coarse
    bin has a page (``page_of`` ≥ 0), else in ``coarse[2·bin + label]``. NaN scores and labels other than
    0 / 1 / ``ignore`` are skipped and counted: returns (NaN scores, bad labels)."""
    mask = np.uint32((1 << shift) - 1)
    bad_score = 0
    bad_label = 0
    for i in range(scores.shape[0]):
        lab = labels[i]
        st = _status(scores[i], lab, not use_roi or roi[i] != 0, ignore)
        bad_score += st == 2
        bad_label += st == 3
        if st != 1:
            continue
        k = _key(scores[i])
        b = np.int64(k >> np.uint32(shift))
        p = page_of[b]
        if p >= 0:
            fine[p, (np.int64(k & mask) << 1) | np.int64(lab)] += sign
        else:
            coarse[(b << 1) | np.int64(lab)] += sign
    return bad_score, bad_label
