"""Bootstrap confidence intervals over *images* (boxes of one image are not independent): each replicate
resamples the ID images and the OOD images with replacement (stratified) and recomputes the metric on their
boxes; percentile intervals. The units are the images that hold at least one of the given boxes (so the result
does not depend on how images are numbered, and no replicate is empty). Paired: every method is evaluated on the same replicates, so the interval of a
difference between two methods says whether it is real (an interval excluding 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import OODLensError
from .matching import _np, score_vector


def _by_image(image: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(image, kind="stable")
    counts = np.bincount(image, minlength=n_images)
    return order, np.cumsum(counts) - counts, counts


def _resample(order: np.ndarray, start: np.ndarray, counts: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Row indices of the boxes of the picked images (with repetition), vectorised."""
    c = counts[pick]
    offs = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
    return order[np.repeat(start[pick], c) + offs]


def auroc_fast(scores_id: np.ndarray, scores_ood: np.ndarray) -> float:
    """AUROC = P(OOD score > ID score) + ½·P(equal), the definition of :func:`oodlens.metrics.auroc`, by one sort
    and two searchsorted calls without input checks — for the many small resamples of a bootstrap."""
    a = np.sort(scores_id)
    lt = np.searchsorted(a, scores_ood, "left")
    le = np.searchsorted(a, scores_ood, "right")
    return float((lt.sum() + 0.5 * (le - lt).sum()) / (a.size * scores_ood.size))


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(metric: Callable[[np.ndarray, np.ndarray], float], scores: Mapping[str, tuple[Any, Any]],
              id_image: Any, ood_image: Any, reps: int = 200, level: float = 0.95, seed: int = 0,
              baseline: str | None = None) -> dict[str, dict[str, Interval]]:
    """``metric(id_scores, ood_scores)`` per method with a percentile interval over image resamples; with
    ``baseline``, also the paired difference (method − baseline). Returns {method: {"value": ..., "diff": ...}}."""
    if not scores:
        raise OODLensError("bootstrap needs at least one method's scores")
    if baseline is not None and baseline not in scores:
        raise OODLensError(f"baseline {baseline!r} is not among the methods {list(scores)}")
    if not (isinstance(reps, (int, np.integer)) and reps >= 1):
        raise OODLensError(f"reps must be an integer ≥ 1, got {reps!r}")
    if not 0 < level < 1:
        raise OODLensError(f"level must be in (0, 1) (e.g. 0.95), got {level}")
    ii, oi = _np(id_image), _np(ood_image)
    for name, g in (("id_image", ii), ("ood_image", oi)):
        if g.ndim != 1 or (g.size and ((g % 1 != 0).any() or g.min() < 0)):
            raise OODLensError(f"{name} must be a 1-D array of non-negative integer image indices")
    if ii.size == 0 or oi.size == 0:
        raise OODLensError("bootstrap needs ID and OOD boxes")
    # images numbered 0..n−1 in order of their index, only those holding a box
    ii, oi = np.unique(ii.astype(np.int64), return_inverse=True)[1], np.unique(oi.astype(np.int64), return_inverse=True)[1]
    ni, no = int(ii.max()) + 1, int(oi.max()) + 1
    gi, go = _by_image(ii, ni), _by_image(oi, no)
    rng = np.random.default_rng(seed)
    arrays = {k: (score_vector(a, ii.size, f"{k!r} ID scores (one per id_image entry)"),
                  score_vector(b, oi.size, f"{k!r} OOD scores (one per ood_image entry)")) for k, (a, b) in scores.items()}
    point = {k: metric(a, b) for k, (a, b) in arrays.items()}
    reps_v = {k: np.empty(reps) for k in arrays}
    for r in range(reps):  # one replicate = one resample of images for every method (paired)
        ri = _resample(*gi, rng.integers(0, ni, ni))
        ro = _resample(*go, rng.integers(0, no, no))
        for k, (a, b) in arrays.items():
            reps_v[k][r] = metric(a[ri], b[ro])
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out: dict[str, dict[str, Interval]] = {}
    for k, v in reps_v.items():
        out[k] = {"value": Interval(point[k], *np.percentile(v, [lo, hi]))}
        if baseline is not None:
            d = v - reps_v[baseline]
            out[k]["diff"] = Interval(point[k] - point[baseline], *np.percentile(d, [lo, hi]))
    return out
