"""The VOS protocol (Du et al., ICLR 2022), exactly as its reference code (deeplearning-wisc/vos,
``detection/offline_evaluation/`` and ``metric_utils.py``):

1. **Threshold** (``compute_average_precision.py``): COCOeval on ID *validation*; ``precision`` and ``scores``
   are averaged over the ten IoU thresholds (``eval['precision'].mean(0)[:, :, 0, 2]``: area all, maxDets 100 —
   the code averages over IoU 0.50:0.95, not IoU 0.5 alone); per class, F1 = 2PR/(P+R) at each of the 101
   recall points, the score at the F1-optimal point is taken, zeros are dropped, and the threshold is the mean
   over classes.
2. **Samples** (``eval_predictions_preprocess``): a detection is skipped when its confidence (the largest
   known-class probability, background column removed) is *below* the threshold, so ID samples are the
   detections on ID images with confidence ≥ threshold and OOD samples those on OOD images with confidence ≥
   threshold (the same ``≥`` on both sides in the code).
3. **Metrics** (``metric_utils.get_measures``): ID is the positive class (the score passed is "ID-ness", here
   −OOD score); AUROC and AUPR as sklearn; **FPR95** = the fraction of OOD samples kept at the threshold whose
   ID recall is *closest* to 95 % (``argmin |recall − 0.95|`` over distinct thresholds, ties to the lowest
   threshold), which can differ from oodlens' ``ood_accepted_at_id_kept`` (smallest FPR with recall ≥ 95 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OODLensError
from ..metrics import aupr_in, auroc
from .ap import REC_THRS, coco_ap
from .boxes import Detections, GroundTruth
from .matching import _np, score_vector


def vos_threshold(dets: Detections, gt: GroundTruth) -> float:
    """Confidence threshold of the VOS protocol, chosen on ID validation detections and ground truth."""
    present = np.bincount(gt.labels[gt.labels >= 0].numpy(), minlength=dets.num_classes) > 0
    if not present.all():
        missing = np.flatnonzero(~present).tolist()
        raise OODLensError(f"VOS threshold: classes {missing} have no ID-validation ground truth (the reference "
                           f"code would average a -1 score into the threshold); add validation images with them")
    r = coco_ap(dets, gt)
    precisions = r.precision.mean(0)  # (R, K), averaged over IoU thresholds as the reference
    recalls = REC_THRS[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * (precisions * recalls) / (precisions + recalls)
    best = f1.argmax(0)  # NaN (P = R = 0) counts as the maximum, as numpy's argmax in the reference
    scores = r.scores.mean(0)
    chosen = scores[best, np.arange(scores.shape[1])]
    chosen = chosen[chosen != 0]
    if chosen.size == 0:
        raise OODLensError("VOS threshold: no class has a detection on ID validation")
    return float(chosen.mean())


def vos_fpr(scores_id: Any, scores_ood: Any, level: float = 0.95) -> float:
    """VOS's FPR at ``level`` ID recall (``fpr_and_fdr_at_recall``): scores are OOD scores (higher = more OOD);
    ID is the positive class ranked by −score; the operating point is the one whose recall is closest to
    ``level`` (ties: lowest threshold)."""
    if not 0 < level <= 1:
        raise OODLensError(f"VOS FPR: the ID recall level must be in (0, 1], got {level}")
    sid = -score_vector(np.ravel(_np(scores_id)), np.size(_np(scores_id)), "ID scores")
    sood = -score_vector(np.ravel(_np(scores_ood)), np.size(_np(scores_ood)), "OOD scores")
    if sid.size == 0 or sood.size == 0:
        raise OODLensError(f"VOS FPR needs ID and OOD samples, got {sid.size} ID and {sood.size} OOD")
    y = np.r_[np.ones(sid.size, bool), np.zeros(sood.size, bool)]
    s = np.r_[sid, sood]
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    idx = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[idx]
    fps = 1 + idx - tps
    recall = tps / tps[-1]
    last = int(tps.searchsorted(tps[-1]))
    recall, fps = np.r_[recall[last::-1], 1], np.r_[fps[last::-1], 0]
    cutoff = int(np.argmin(np.abs(recall - level)))
    return float(fps[cutoff] / sood.size)


@dataclass(frozen=True)
class VOSResult:
    threshold: float
    n_id: int
    n_ood: int
    auroc: float
    fpr95: float
    aupr_in: float

    def as_dict(self) -> dict[str, float]:
        return {"auroc": self.auroc, "fpr95_vos": self.fpr95, "aupr_in": self.aupr_in,
                "n_id_boxes": self.n_id, "n_ood_boxes": self.n_ood}


def vos_samples(dets: Detections, threshold: float) -> np.ndarray:
    """Boolean mask of the detections the protocol keeps: confidence ≥ threshold."""
    return _np(dets.confidence) >= threshold


def vos_evaluate(id_dets: Detections, ood_dets: Detections, id_scores: Any, ood_scores: Any,
                 threshold: float, level: float = 0.95) -> VOSResult:
    """Box-level OOD metrics of the VOS protocol from per-box OOD scores of *all* detections on the ID test and
    OOD test images (the protocol keeps those with confidence ≥ ``threshold``)."""
    si, so = _np(id_scores).ravel(), _np(ood_scores).ravel()
    if not np.isfinite(threshold):
        raise OODLensError(f"VOS protocol: the confidence threshold must be finite, got {threshold}")
    if si.shape[0] != id_dets.n or so.shape[0] != ood_dets.n:
        raise OODLensError(f"scores must cover every detection: got {si.shape[0]} ID scores for {id_dets.n} boxes "
                           f"and {so.shape[0]} OOD scores for {ood_dets.n} boxes")
    mi, mo = vos_samples(id_dets, threshold), vos_samples(ood_dets, threshold)
    a, b = si[mi], so[mo]
    if a.size == 0 or b.size == 0:
        raise OODLensError(f"VOS protocol: threshold {threshold:.4f} keeps {a.size} ID and {b.size} OOD boxes; "
                           f"both must be non-empty")
    return VOSResult(threshold, int(a.size), int(b.size), auroc(a, b), vos_fpr(a, b, level), aupr_in(a, b))
