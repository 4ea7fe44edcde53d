"""Enhancements of box-level OOD scores (each a transform of a registered detector's scores, fitted on ID
*validation* boxes only — never on OOD data):

* :class:`ClassConditionalConformal` — Mondrian (class-conditional) conformal p-values (Vovk et al. 2003; the
  marginal p-value of Bates et al. 2023 within each predicted class): p(x) = (1 + #{i ∈ cal_ĉ : s_i ≥ s(x)}) /
  (n_ĉ + 1), score = −log p. A class whose boxes score high anyway (a hard class) no longer dominates the
  flagged set.
* :class:`SizeNormalised` — size-aware normalisation: boxes are binned by log-area (quantile bins of the ID
  validation boxes); score = (s − median_bin) / IQR_bin. Small boxes carry less evidence and score noisier.
* :func:`fused_scores` — fusion of a logit-based and a feature-based score through :class:`oodlens.fusion
  .ScoreFusion` (Fisher's combination of their conformal p-values by default).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..errors import NotFittedError, OODLensError
from ..fusion import ScoreFusion
from .matching import _np, score_vector


def _classes(classes: Any, n: int, num_classes: int, what: str) -> np.ndarray:
    c = _np(classes)
    if c.ndim != 1 or c.shape[0] != n:
        raise OODLensError(f"{what} classes must have one entry per box, shape ({n},), got {c.shape}")
    if c.size and ((c % 1 != 0).any() or c.min() < 0 or c.max() >= num_classes):
        raise OODLensError(f"{what} classes must be integers in 0..{num_classes - 1}, got values in "
                           f"{c.min()}..{c.max()}")
    return c.astype(np.int64)


def _boxes(boxes: Any, n: int) -> np.ndarray:
    from .boxes import check_boxes

    b = _np(check_boxes(torch.as_tensor(_np(boxes)), "boxes")).astype(np.float64)
    if b.shape[0] != n:
        raise OODLensError(f"{n} scores but {b.shape[0]} boxes")
    return b


def _counts_at_least(cal_key: np.ndarray, cal_group: np.ndarray, s: np.ndarray, group: np.ndarray) -> np.ndarray:
    """#{i : group_i = g, cal_i ≥ s} per query, by one searchsorted on (group, score) (complex keys order
    lexicographically in numpy)."""
    sorted_keys = np.sort(cal_group + 1j * cal_key)
    below = np.searchsorted(sorted_keys, group + 1j * s, "left")
    end = np.searchsorted(sorted_keys.real, group, "right")
    return end - below


class ClassConditionalConformal:
    """score → −log p with p the class-conditional conformal p-value (see the module docstring)."""

    def fit(self, scores: Any, classes: Any, num_classes: int) -> "ClassConditionalConformal":
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise OODLensError(f"num_classes must be a positive integer, got {num_classes!r}")
        s = score_vector(scores, np.size(_np(scores)), "calibration scores")
        if s.size == 0:
            raise OODLensError("ClassConditionalConformal needs calibration scores (got none)")
        c = _classes(classes, s.size, num_classes, "calibration")
        self.n_ = np.bincount(c, minlength=num_classes)
        # a class without calibration boxes falls back to all classes pooled (marked by group -1)
        self.fallback_ = self.n_ == 0
        self.cal_, self.group_ = s, c
        return self

    def score(self, scores: Any, classes: Any) -> torch.Tensor:
        if not hasattr(self, "n_"):
            raise NotFittedError("ClassConditionalConformal is not fitted")
        s = score_vector(scores, np.size(_np(scores)), "scores")
        c = _classes(classes, s.size, self.n_.size, "box")
        grp = np.where(self.fallback_[c], -1, c)
        cal_s = np.r_[self.cal_, self.cal_]
        cal_g = np.r_[self.group_, np.full(self.cal_.size, -1)]
        m = _counts_at_least(cal_s, cal_g, s, grp)
        n = np.where(self.fallback_[c], self.cal_.size, self.n_[c])
        return torch.from_numpy(-np.log((1.0 + m) / (n + 1.0)))


class SizeNormalised:
    """score → (s − median) / IQR within log-area bins fitted on ID validation boxes."""

    def __init__(self, bins: int = 4):
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise OODLensError(f"bins must be a positive integer, got {bins!r}")
        self.bins = bins

    @staticmethod
    def _log_area(boxes: Any) -> np.ndarray:
        b = _np(boxes).astype(np.float64)
        return np.log(np.clip((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6, None))

    def fit(self, scores: Any, boxes: Any) -> "SizeNormalised":
        s = score_vector(scores, np.size(_np(scores)), "calibration scores")
        if s.size == 0:
            raise OODLensError("SizeNormalised needs calibration scores (got none)")
        a = self._log_area(_boxes(boxes, s.size))
        self.edges_ = np.quantile(a, np.linspace(0, 1, self.bins + 1)[1:-1])
        b = np.searchsorted(self.edges_, a)
        order = np.lexsort((s, b))
        med, iqr = np.zeros(self.bins), np.ones(self.bins)
        bs, ss = b[order], s[order]
        for k in range(self.bins):  # a handful of bins
            v = ss[bs == k]
            if v.size:
                q1, q2, q3 = np.quantile(v, [0.25, 0.5, 0.75])
                med[k], iqr[k] = q2, max(q3 - q1, 1e-12)
        self.median_, self.iqr_ = med, iqr
        return self

    def score(self, scores: Any, boxes: Any) -> torch.Tensor:
        if not hasattr(self, "edges_"):
            raise NotFittedError("SizeNormalised is not fitted")
        s = score_vector(scores, np.size(_np(scores)), "scores")
        b = np.searchsorted(self.edges_, self._log_area(_boxes(boxes, s.size)))
        return torch.from_numpy((s - self.median_[b]) / self.iqr_[b])


def fused_scores(val: Mapping[str, Any], test: Mapping[str, Any], method: str = "fisher") -> torch.Tensor:
    """Fuse several scores (name → ID validation scores / test scores) with :class:`ScoreFusion`."""
    return ScoreFusion(method).fit({k: torch.as_tensor(_np(v)) for k, v in val.items()}).score(
        {k: torch.as_tensor(_np(v)) for k, v in test.items()})
