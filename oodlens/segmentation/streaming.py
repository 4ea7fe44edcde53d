"""Pooled pixel metrics, streamed: memory does not grow with the number of pixels.

Every valid pixel (label 0 normal or 1 anomaly; ``ignore_index`` and pixels outside the region of interest are
skipped) is counted in a two-level histogram over scale-free score bins (see :mod:`._hist_kernel`):

* *coarse* bins: the top ``bits`` bits (default 22) of the order-preserving float32 key, i.e. a relative score
  width of 2^−(bits − 9) (2^−13 by default) whatever the range of the scores;
* *fine pages*: a coarse bin that holds more than ``heavy`` pixels (default 256) gets a page that counts every
  distinct float32 score in it apart (up to ``max_pages`` = 4 096 pages, heaviest bins first). Each batch is counted
  per coarse bin first and pages are handed out before its pixels are added, so a saturated score (MSP near
  −1, millions of pixels in a few coarse bins) is resolved exactly from its first frame on (the batch is
  looked at through every 8th pixel for this, so the full pass over the pixels happens once).

The ROC and precision–recall curves are then the exact curves of the binned scores:

    AUROC  = Σ_g n_g (P_>g + ½ p_g) / (P · N)                 (trapezoid over groups = ties counted ½)
    AP     = Σ_k (R_k − R_{k−1}) · Prec_k                      (step sum, as scikit-learn and SegmentMeIfYouCan)
    FPR95  = FP / N at the first cut whose TPR ≥ 0.95          (anomaly pixels positive)

(p_g / n_g: anomaly / normal pixels in group g, P_>g: anomaly pixels above it; cuts from the highest score
down). The one difference from the sort-based metric: scores within one coarse bin without a page count as
ties, and pixels counted in a bin before it got its page (fewer than ``heavy``) sit below its fine groups;
:attr:`PixelCounts.auroc_tie_bound` bounds the AUROC error from both. Memory: per thread 2^(bits+4) bytes of
coarse counts, 2 · 2^(bits+3) of batch counts and touched-bin lists, and 2^(36 − bits) bytes per page (at most
192 MB per thread at the defaults; page memory is only touched when a page is used). Scores are binned in float32 (float64 rounded first).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import OODLensError
from ..metrics.ood import Curve
from ._validate import flat_pixels

DEFAULT_BITS = 22
#: pages are handed out from every SAMPLE-th pixel of a batch (a bin the batch fills heavily shows in the sample)
SAMPLE = 8


@dataclass(frozen=True)
class PixelCounts:
    """Counts of normal and anomaly pixels per score group (a fine bin or a coarse bin), highest scores first."""

    pos: np.ndarray  # (K,) anomaly pixels per non-empty group
    neg: np.ndarray  # (K,) normal pixels per non-empty group
    lower: np.ndarray  # (K,) float32 lowest score a group can hold (a pixel is in groups 0..k iff ≈ score ≥ lower[k])
    uncertain_pairs: float = 0.0  # (anomaly, normal) pairs in one coarse bin whose order is not known (residue)

    @property
    def n_pos(self) -> int:
        return int(self.pos.sum())

    @property
    def n_neg(self) -> int:
        return int(self.neg.sum())

    def curve(self) -> Curve:
        """The ROC / PR operating points (cumulative counts per group, highest first)."""
        if self.n_pos == 0 or self.n_neg == 0:
            raise OODLensError(f"pooled pixel metrics need anomaly and normal pixels, got {self.n_pos} anomaly and "
                               f"{self.n_neg} normal pixel(s) (after ignore and region-of-interest masks)")
        return Curve(np.cumsum(self.pos), np.cumsum(self.neg), self.n_pos, self.n_neg)

    @property
    def auroc_tie_bound(self) -> float:
        """Largest possible |binned AUROC − exact AUROC|: (½ Σ_g p_g n_g + uncertain pairs) / (P N) (exact ties
        count in it too, so it is a bound, not the error)."""
        ties = 0.5 * float(np.dot(self.pos.astype(np.float64), self.neg))
        return (ties + self.uncertain_pairs) / (self.n_pos * self.n_neg)

    def best_f1(self) -> tuple[float, float]:
        """(pixel F1, threshold t) at the cut maximising F1 = 2TP / (2TP + FP + FN), predicting anomaly where
        score ≥ t (SegmentMeIfYouCan's ``best_f1_threshold``)."""
        c = self.curve()
        f1 = 2 * c.tps / (2 * c.tps + c.fps + (c.n_pos - c.tps))
        k = int(np.argmax(f1))
        return float(f1[k]), float(self.lower[k])

    def metrics(self, level: float = 0.95) -> dict[str, float]:
        """AUROC, AP (step sum), FPR at ``level`` TPR, best pixel F1 and its threshold, counts, tie bound."""
        c = self.curve()
        f1, thr = self.best_f1()
        return {"auroc": c.auroc(), "ap": c.average_precision(), "fpr95": c.fpr_at_tpr(level), "f1": f1,
                "threshold": thr, "n_anomaly": self.n_pos, "n_normal": self.n_neg,
                "auroc_tie_bound": self.auroc_tie_bound}


def _threads(threads: int | None) -> int:
    if threads is None:
        threads = min(torch.get_num_threads(), os.cpu_count() or 1)
    return max(1, int(threads))


def _lower(key: np.ndarray) -> np.ndarray:
    """float32 score of uint32 order-preserving keys (the inverse of the kernel's key); −inf for the bin of −inf."""
    key = key.astype(np.uint32)
    f = np.where(key >> np.uint32(31), key & np.uint32(0x7FFFFFFF), ~key).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(f), np.float32(-np.inf), f)


class StreamingPixelMetrics:
    """Accumulate pooled pixel metrics over any number of frames: ``update(scores, labels, roi)`` per batch,
    then :meth:`counts` / :meth:`compute`. Labels: 0 normal, 1 anomaly, ``ignore_index`` ignored (use
    :func:`~oodlens.segmentation.anomaly_labels` to map a semantic map); higher score = more anomalous.

    ``bits``: coarse resolution (relative width 2^−(bits − 9)); ``heavy`` / ``max_pages``: when a coarse bin
    gets a fine page and how many there can be; ``threads``: threads (each with its own counts)."""

    def __init__(self, ignore_index: int = 255, bits: int = DEFAULT_BITS, threads: int | None = None,
                 heavy: int = 256, max_pages: int = 4096):
        if not (isinstance(bits, int) and 12 <= bits <= 26):
            raise OODLensError(f"bits must be an integer in [12, 26], got {bits!r}")
        if not (isinstance(ignore_index, int) and 2 <= ignore_index <= 255):
            raise OODLensError(f"ignore_index must be an integer in [2, 255], got {ignore_index!r}")
        if not (isinstance(max_pages, int) and max_pages >= 0 and isinstance(heavy, int) and heavy >= 0):
            raise OODLensError(f"heavy and max_pages must be non-negative integers, got {heavy!r}, {max_pages!r}")
        self.ignore_index, self.bits, self.heavy, self.max_pages = ignore_index, bits, heavy, max_pages
        self.shift = 32 - bits
        self.threads = _threads(threads)
        self._coarse = np.zeros((self.threads, 2 << bits), dtype=np.int64)
        self._batch = np.zeros((self.threads, 1 << bits), dtype=np.int64)  # zero between batches
        self._touched = np.zeros((self.threads, 1 << bits), dtype=np.int64)
        self._fine = np.zeros((self.threads, max(1, max_pages), 2 << self.shift), dtype=np.int64)  # touched lazily
        self._page_of = np.full(1 << bits, -1, dtype=np.int32)
        self._page_bin: list[int] = []
        self.n_frames = 0

    def update(self, scores: Any, labels: Any, roi: Any = None) -> "StreamingPixelMetrics":
        """Add a batch: ``scores`` and ``labels`` of the same shape ((H, W), (B, H, W) or flat (N,)), ``roi``
        (optional, same shape, nonzero = evaluated). NaN scores or label values other than 0 / 1 / ignore raise
        before anything is counted. ±inf scores are allowed."""
        from ._hist_kernel import add_pixels, coarse_counts

        s, lab, roi_a, frames = flat_pixels(scores, labels, roi)
        use_roi = roi_a is not None
        r = roi_a if use_roi else lab
        parts = np.linspace(0, s.shape[0], self.threads + 1).astype(np.int64)

        def count(t: int) -> tuple[int, int, int]:  # a 1-in-SAMPLE look at the batch: which bins get heavy
            a, b = parts[t], parts[t + 1]
            sl = slice(a, b, SAMPLE)
            return coarse_counts(s[sl], lab[sl], r[sl], use_roi, self.ignore_index, self.shift, self._batch[t],
                                 self._touched[t])

        res = self._map(count)
        touched = [self._touched[t, :res[t][2]] for t in range(self.threads)]
        try:
            self._assign_pages(np.unique(np.concatenate(touched)) if self.threads > 1 else touched[0])
        finally:
            for t in range(self.threads):
                self._batch[t, touched[t]] = 0

        def add(t: int, sign: int = 1) -> tuple[int, int]:
            a, b = parts[t], parts[t + 1]
            return add_pixels(s[a:b], lab[a:b], r[a:b], use_roi, self.ignore_index, self.shift, self._page_of,
                              self._coarse[t], self._fine[t], sign)

        bad = self._map(add)
        bad_score, bad_label = sum(x[0] for x in bad), sum(x[1] for x in bad)
        if bad_score or bad_label:
            self._map(lambda t: add(t, -1))  # take the batch out again (the bad pixels were never counted)
            what = f"{bad_score} NaN score(s)" if bad_score else \
                f"{bad_label} label(s) other than 0 (normal), 1 (anomaly) or {self.ignore_index} (ignore)"
            raise OODLensError(f"pixel scores/labels: {what}; nothing of this batch was counted")
        self.n_frames += frames
        return self

    def _assign_pages(self, idx: np.ndarray) -> None:
        """Give fine pages to the coarse bins ``idx`` (touched by this batch) that it makes heavy (heaviest
        first, while pages last)."""
        left = self.max_pages - len(self._page_bin)
        if left <= 0 or not idx.size:
            return
        idx = idx[self._page_of[idx] < 0]
        if not idx.size:
            return
        batch = self._batch[:, idx].sum(0)
        before = (self._coarse[:, 2 * idx] + self._coarse[:, 2 * idx + 1]).sum(0)
        heavy = batch * SAMPLE + before > self.heavy
        cand, batch = idx[heavy], batch[heavy]
        if not cand.size:
            return
        cand = cand[np.argsort(-batch, kind="stable")][:left]
        self._page_of[cand] = np.arange(len(self._page_bin), len(self._page_bin) + cand.size, dtype=np.int32)
        self._page_bin.extend(cand.tolist())

    def _map(self, fn) -> list:
        if self.threads == 1:
            return [fn(0)]
        if getattr(self, "_pool", None) is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="oodlens-pixels")
        futures = [self._pool.submit(fn, t) for t in range(1, self.threads)]
        first = fn(0)
        return [first] + [f.result() for f in futures]

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def counts(self) -> PixelCounts:
        """The non-empty groups, highest scores first."""
        coarse = self._coarse.sum(0) if self.threads > 1 else self._coarse[0]
        neg_c, pos_c = coarse[0::2], coarse[1::2]
        bins = np.flatnonzero((neg_c + pos_c) > 0)
        order_key = [bins.astype(np.int64) << (self.shift + 1)]  # a coarse bin (or a page's residue) sorts last in it
        pos, neg = [pos_c[bins]], [neg_c[bins]]
        lower = [_lower(bins.astype(np.uint64) << np.uint64(self.shift))]
        uncertain = 0.0
        n_pages = len(self._page_bin)
        if n_pages:
            fine = self._fine[:, :n_pages].sum(0) if self.threads > 1 else self._fine[0, :n_pages]
            neg_f, pos_f = fine[:, 0::2], fine[:, 1::2]
            page, sub = np.nonzero((neg_f + pos_f) > 0)
            b = np.asarray(self._page_bin, dtype=np.int64)[page]
            order_key.append((b << (self.shift + 1)) | (sub.astype(np.int64) << 1) | 1)
            pos.append(pos_f[page, sub])
            neg.append(neg_f[page, sub])
            lower.append(_lower((b.astype(np.uint64) << np.uint64(self.shift)) | sub.astype(np.uint64)))
            pb = np.asarray(self._page_bin, dtype=np.int64)  # residue × fine pixels of the same bin: order unknown
            uncertain = float(np.dot(pos_c[pb], neg_f.sum(1)) + np.dot(neg_c[pb], pos_f.sum(1)))
        key = np.concatenate(order_key)
        order = np.argsort(-key, kind="stable")
        return PixelCounts(np.concatenate(pos)[order], np.concatenate(neg)[order],
                           np.concatenate(lower)[order].astype(np.float32), uncertain)

    def merge(self, other: "StreamingPixelMetrics") -> "StreamingPixelMetrics":
        """Add another accumulator's counts (same ``bits`` and ``ignore_index``); its fine pages are added
        where this one has the same page, else folded into the coarse bin."""
        if (other.bits, other.ignore_index) != (self.bits, self.ignore_index):
            raise OODLensError("can only merge accumulators with the same bits and ignore_index")
        self._coarse[0] += other._coarse.sum(0)
        for p, b in enumerate(other._page_bin):
            page = other._fine[:, p].sum(0)
            mine = self._page_of[b]
            if mine >= 0:
                self._fine[0, mine] += page
            else:
                self._coarse[0, 2 * b] += page[0::2].sum()
                self._coarse[0, 2 * b + 1] += page[1::2].sum()
        self.n_frames += other.n_frames
        return self

    def compute(self, level: float = 0.95) -> dict[str, float]:
        """Pooled AUROC, AP, FPR at ``level`` TPR, best F1 (and threshold), counts and the AUROC tie bound."""
        return self.counts().metrics(level)
