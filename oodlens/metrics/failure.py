"""Failure-detection metrics for selective classification: AURC, E-AURC, AUGRC and misclassification AUROC.

Sign conventions (explicit everywhere): ``values`` are a **confidence** (higher = more trusted, accepted first)
with ``kind="confidence"`` (default), or an OOD **score** (higher = more OOD, rejected first) with
``kind="score"`` — then ``confidence = −score``. ``correct`` is True where the prediction is right; a *failure*
is a wrong prediction (with ``is_ood``, OOD inputs count as failures too: any prediction on them is unwanted).

Risk–coverage curve (Geifman & El-Yaniv 2017; Traub et al., "Overcoming common flaws in the evaluation of
selective classification systems", NeurIPS 2024): accept the inputs with confidence ≥ τ, for every distinct τ
(tied inputs move together). At coverage ``c = #accepted / N``:

* selective risk ``= #failures accepted / #accepted``;   **AURC** = area under (coverage, selective risk);
* generalized risk ``= #failures accepted / N``;         **AUGRC** = area under (coverage, generalized risk) —
  the average risk of an undetected failure over all thresholds (Traub et al.).

Both areas are trapezoids over the curve's points plus an end point at coverage 0 (selective risk held at its
last value; generalized risk 0), as in the reference implementation (``fd_shifts.analysis.rc_stats``,
``RiskCoverageStats.aurc`` / ``.augrc``; that code multiplies by 1000 for display, here values are in [0, 1]).
**E-AURC** = AURC − AURC of an optimal confidence with the same error rate ``r``: ``r + (1 − r) ln(1 − r)``
(the closed form the reference code uses for binary failures). **Misclassification AUROC**: AUROC with failure
as the positive class and ``−confidence`` as its score (ties count ½).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import OODLensError
from .ood import _as_scores, auroc

KINDS = ("confidence", "score")


def _confidence(values: Any, kind: str) -> np.ndarray:
    if kind not in KINDS:
        raise OODLensError(f"kind must be 'confidence' (higher = more trusted) or 'score' (higher = more OOD), "
                           f"got {kind!r}")
    v = _as_scores(values, "confidence" if kind == "confidence" else "scores").astype(np.float64)
    return v if kind == "confidence" else -v


def _mask(x: Any, n: int, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    a = a.reshape(-1) if a.ndim > 1 and a.size == max(a.shape) else a
    if a.shape != (n,):
        raise OODLensError(f"{name} must have one entry per score ({n}), got shape {a.shape}")
    if a.dtype != bool:
        if not np.isin(a, (0, 1)).all():
            raise OODLensError(f"{name} must be boolean (or 0/1)")
        a = a.astype(bool)
    return a


def failures(values: Any, correct: Any, is_ood: Any = None, kind: str = "confidence") -> tuple[np.ndarray, np.ndarray]:
    """(confidence, failure mask): failure = not correct, or OOD when ``is_ood`` is given."""
    conf = _confidence(values, kind)
    fail = ~_mask(correct, conf.shape[0], "correct")
    if is_ood is not None:
        fail |= _mask(is_ood, conf.shape[0], "is_ood")
    return conf, fail


def rc_curve(values: Any, correct: Any, is_ood: Any = None, kind: str = "confidence") -> dict[str, np.ndarray]:
    """Risk–coverage points from full coverage down to 0: ``coverage``, ``selective_risk``, ``generalized_risk``
    and ``threshold`` (confidence τ of each point; accepted = confidence ≥ τ; −inf at coverage 0)."""
    conf, fail = failures(values, correct, is_ood, kind)
    n = conf.shape[0]
    order = np.argsort(conf, kind="stable")
    c, f = conf[order], fail[order].astype(np.int64)
    starts = np.r_[0, np.flatnonzero(c[1:] != c[:-1]) + 1]  # first index of each distinct confidence
    accepted = n - starts
    errors = (np.cumsum(f[::-1])[::-1])[starts]  # failures with confidence ≥ that value
    coverage = np.r_[accepted / n, 0.0]
    selective = np.r_[errors / accepted, errors[-1] / accepted[-1]]
    generalized = np.r_[errors / n, 0.0]
    return {"coverage": coverage, "selective_risk": selective, "generalized_risk": generalized,
            "threshold": np.r_[c[starts], -np.inf]}


def _area(coverage: np.ndarray, risk: np.ndarray) -> float:
    return float(np.sum((coverage[:-1] - coverage[1:]) * (risk[:-1] + risk[1:])) / 2.0)


def aurc(values: Any, correct: Any, is_ood: Any = None, kind: str = "confidence") -> float:
    """Area under the (coverage, selective risk) curve, in [0, 1]; lower is better."""
    rc = rc_curve(values, correct, is_ood, kind)
    return _area(rc["coverage"], rc["selective_risk"])


def optimal_aurc(error_rate: float) -> float:
    """AURC of a perfect confidence ranking with failure rate ``r``: ``r + (1 − r) ln(1 − r)``."""
    r = float(error_rate)
    return 1.0 if r >= 1.0 else r + (1.0 - r) * math.log1p(-r)


def e_aurc(values: Any, correct: Any, is_ood: Any = None, kind: str = "confidence") -> float:
    """Excess AURC: AURC minus the optimal AURC at the same failure rate."""
    _, fail = failures(values, correct, is_ood, kind)
    return aurc(values, correct, is_ood, kind) - optimal_aurc(float(fail.mean()))


def augrc(values: Any, correct: Any, is_ood: Any = None, kind: str = "confidence") -> float:
    """Area under the (coverage, generalized risk) curve (Traub et al. 2024), in [0, 0.5]; lower is better."""
    rc = rc_curve(values, correct, is_ood, kind)
    return _area(rc["coverage"], rc["generalized_risk"])


def misclassification_auroc(values: Any, correct: Any, is_ood: Any = None, kind: str = "confidence") -> float:
    """AUROC of separating failures (positive: misclassified, or OOD with ``is_ood``) from correct predictions,
    ranking by ``−confidence``; 1 = every failure is less confident than every success."""
    conf, fail = failures(values, correct, is_ood, kind)
    if fail.all() or not fail.any():
        raise OODLensError(f"misclassification AUROC needs both failures and successes, got "
                           f"{int(fail.sum())} failures of {fail.size}")
    return auroc(-conf[~fail], -conf[fail])


def failure_metrics(values: Any, correct: Any, is_ood: Any = None, kind: str = "confidence") -> dict[str, float | None]:
    """AURC, E-AURC, AUGRC, misclassification AUROC and the failure rate from one call (the AUROC is None when
    there are no failures or no successes: it is undefined then)."""
    conf, fail = failures(values, correct, is_ood, kind)
    rc = rc_curve(conf, ~fail)
    a = _area(rc["coverage"], rc["selective_risk"])
    out = {"aurc": a, "e_aurc": a - optimal_aurc(float(fail.mean())),
           "augrc": _area(rc["coverage"], rc["generalized_risk"]), "failure_rate": float(fail.mean())}
    out["misclassification_auroc"] = misclassification_auroc(conf, ~fail) if 0 < fail.sum() < fail.size else None
    return out
