"""OOD-detection metrics as pure functions of ``(scores_id, scores_ood)`` where higher scores mean more OOD.

The positive class is explicit: ``positive="ood"`` (default) or ``"id"``. Ties are handled exactly: all inputs with
the same score move across a threshold together (the same operating points as ``sklearn.metrics.roc_curve``).

Two FPR conventions exist in the literature and both are here under unambiguous names:

* :func:`ood_accepted_at_id_kept` — the fraction of OOD inputs accepted while ``level`` of ID inputs are kept
  (MSP, ODIN, Energy, VOS papers: "FPR95" with ID as the positive class);
* :func:`id_rejected_at_ood_caught` — the fraction of ID inputs rejected while ``level`` of OOD inputs are caught
  (OpenOOD's "FPR@95", OOD as the positive class).

Every function sorts once; :func:`ood_metrics` computes all of them from one sort (10⁷ scores in about a second).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OODLensError


def _as_scores(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        a = a.reshape(-1) if a.size == max(a.shape, default=0) else a
    if a.ndim != 1:
        raise OODLensError(f"{name} must be 1-D scores, got shape {a.shape}")
    if a.size == 0:
        raise OODLensError(f"{name} is empty")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise OODLensError(f"{name} must be real numbers, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise OODLensError(f"{name} has {int((~np.isfinite(a)).sum())} non-finite value(s)")
    return a


@dataclass(frozen=True)
class Curve:
    """Cumulative counts at each distinct threshold, from the most positive score down.

    ``tps[i]`` / ``fps[i]``: positives / negatives with score ≥ the i-th largest distinct score.
    """

    tps: np.ndarray
    fps: np.ndarray
    n_pos: int
    n_neg: int

    @property
    def tpr(self) -> np.ndarray:
        return np.r_[0.0, self.tps / self.n_pos]

    @property
    def fpr(self) -> np.ndarray:
        return np.r_[0.0, self.fps / self.n_neg]

    def auroc(self) -> float:
        tpr, fpr = self.tpr, self.fpr
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)

    def average_precision(self) -> float:
        precision = self.tps / (self.tps + self.fps)
        recall_steps = np.diff(np.r_[0, self.tps]) / self.n_pos
        return float(np.sum(recall_steps * precision))

    def fpr_at_tpr(self, level: float) -> float:
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level <= 1.0:
            raise OODLensError(f"TPR level must be a number in (0, 1], got {level!r}")
        need = math.ceil(level * self.n_pos - 1e-9)
        i = int(np.searchsorted(self.tps, need, side="left"))
        return float(self.fps[i] / self.n_neg)

    def best_balanced_accuracy(self) -> float:
        return float(np.max(0.5 * self.tpr + 0.5 * (1.0 - self.fpr)))


def _curve_from_sorted(s_desc: np.ndarray, pos_desc: np.ndarray) -> Curve:
    ends = np.r_[np.flatnonzero(s_desc[1:] != s_desc[:-1]), s_desc.shape[0] - 1]
    tps = np.cumsum(pos_desc, dtype=np.int64)[ends]
    fps = ends + 1 - tps
    n_pos = int(tps[-1])
    return Curve(tps, fps, n_pos, int(s_desc.shape[0] - n_pos))


def _sorted_scores(scores_id: Any, scores_ood: Any) -> tuple[np.ndarray, np.ndarray]:
    """All scores ascending, and a boolean mask of which are OOD.

    Fast path for scores exact in float32 (the usual case): widened to float64 their 29 low mantissa bits are
    zero, so the OOD flag is stored in the lowest bit and a plain ``np.sort`` (several times faster than
    ``argsort``) orders values and flags together. The flag moves a value by less than one float32 step, so
    distinct scores keep their order; within a tie the order does not matter, as ties are grouped.
    """
    sid = _as_scores(scores_id, "scores_id")
    sood = _as_scores(scores_ood, "scores_ood")
    if all(a.dtype in (np.float32, np.float16) for a in (sid, sood)):
        s = np.concatenate([sid, sood]).astype(np.float64)
        bits = s.view(np.int64)
        bits[sid.shape[0]:] |= 1
        s.sort()
        is_ood = (bits & 1).astype(bool)
        bits &= ~np.int64(1)
        return s, is_ood
    s = np.concatenate([sid, sood]).astype(np.float64, copy=False)
    order = np.argsort(s)
    is_ood = np.zeros(s.shape[0], dtype=bool)
    is_ood[sid.shape[0]:] = True
    return s[order], is_ood[order]


def curves(scores_id: Any, scores_ood: Any) -> tuple[Curve, Curve]:
    """(curve with OOD positive, curve with ID positive) from one sort."""
    s, is_ood = _sorted_scores(scores_id, scores_ood)
    ood_pos = _curve_from_sorted(s[::-1], is_ood[::-1])
    id_pos = _curve_from_sorted(-s, ~is_ood)  # ascending s = descending "ID-ness"
    return ood_pos, id_pos


def _curve(scores_id: Any, scores_ood: Any, positive: str) -> Curve:
    if positive not in ("ood", "id"):
        raise OODLensError(f"positive must be 'ood' or 'id', got {positive!r}")
    return curves(scores_id, scores_ood)[0 if positive == "ood" else 1]


def auroc(scores_id: Any, scores_ood: Any) -> float:
    """Area under the ROC curve; the probability that an OOD input outscores an ID input (ties count ½).
    The same whichever class is positive."""
    return _curve(scores_id, scores_ood, "ood").auroc()


def aupr_out(scores_id: Any, scores_ood: Any) -> float:
    """Average precision with OOD as the positive class (sklearn's ``average_precision_score``)."""
    return _curve(scores_id, scores_ood, "ood").average_precision()


def aupr_in(scores_id: Any, scores_ood: Any) -> float:
    """Average precision with ID as the positive class, ranking by −score."""
    return _curve(scores_id, scores_ood, "id").average_precision()


def fpr_at_tpr(scores_id: Any, scores_ood: Any, level: float = 0.95, positive: str = "ood") -> float:
    """Smallest false-positive rate over thresholds whose true-positive rate is ≥ ``level``."""
    return _curve(scores_id, scores_ood, positive).fpr_at_tpr(level)


def ood_accepted_at_id_kept(scores_id: Any, scores_ood: Any, level: float = 0.95) -> float:
    """Fraction of OOD inputs accepted as ID when the threshold keeps ``level`` of ID inputs (classic FPR95)."""
    return fpr_at_tpr(scores_id, scores_ood, level, positive="id")


def id_rejected_at_ood_caught(scores_id: Any, scores_ood: Any, level: float = 0.95) -> float:
    """Fraction of ID inputs rejected when the threshold catches ``level`` of OOD inputs (OpenOOD's FPR@95)."""
    return fpr_at_tpr(scores_id, scores_ood, level, positive="ood")


def detection_accuracy(scores_id: Any, scores_ood: Any) -> float:
    """max over thresholds δ of ½·P_id(s ≤ δ) + ½·P_ood(s > δ) (ODIN's detection accuracy, equal priors)."""
    return _curve(scores_id, scores_ood, "ood").best_balanced_accuracy()


def accuracy(predictions: Any, labels: Any) -> float:
    """Fraction of predictions equal to labels (predictions may be logits (N, C) or class indices (N,))."""
    p = predictions.detach().cpu().numpy() if hasattr(predictions, "detach") else np.asarray(predictions)
    y = labels.detach().cpu().numpy() if hasattr(labels, "detach") else np.asarray(labels)
    for a, what in ((p, "predictions"), (y, "labels")):
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            raise OODLensError(f"accuracy: {what} must be real numbers, got dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise OODLensError(f"accuracy: {what} have {int((~np.isfinite(a)).sum())} non-finite value(s)")
    if p.ndim == 2:
        p = p.argmax(1)
    for a, what in ((p, "predicted classes"), (y, "labels")):
        if np.issubdtype(a.dtype, np.floating) and not (a == np.round(a)).all():
            raise OODLensError(f"accuracy: {what} must be integer class indices (or logits (N, C) as predictions)")
    if p.shape != y.shape:
        raise OODLensError(f"predictions {p.shape} and labels {y.shape} differ in shape")
    if p.size == 0:
        raise OODLensError("accuracy of an empty set is undefined")
    return float((p == y).mean())


#: column names of :func:`ood_metrics`, in table order
METRIC_NAMES = ("auroc", "aupr_in", "aupr_out", "ood_accepted_at_95_id", "id_rejected_at_95_ood", "detection_acc")


def ood_metrics(scores_id: Any, scores_ood: Any, level: float = 0.95) -> dict[str, float]:
    """Every OOD metric from one sort. Keys are :data:`METRIC_NAMES` (with 95 replaced by ``level``·100)."""
    ood_pos, id_pos = curves(scores_id, scores_ood)
    pct = f"{level * 100:g}"
    return {
        "auroc": ood_pos.auroc(),
        "aupr_in": id_pos.average_precision(),
        "aupr_out": ood_pos.average_precision(),
        f"ood_accepted_at_{pct}_id": id_pos.fpr_at_tpr(level),
        f"id_rejected_at_{pct}_ood": ood_pos.fpr_at_tpr(level),
        "detection_acc": ood_pos.best_balanced_accuracy(),
    }
