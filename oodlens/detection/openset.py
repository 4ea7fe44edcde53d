"""Open-set detection metrics with ground truth: what AUROC over boxes cannot see (missed unknowns, unknowns
labelled as a known class).

An open-set detector labels each detection either with a known class or as *unknown* (``flagged``, e.g. OOD
score above a threshold). With ground truth holding known labels and :data:`UNKNOWN` objects:

* **unknown recall** (ORE, Joseph et al. CVPR 2021; OpenDet, Han et al. CVPR 2022): the fraction of annotated
  unknown objects matched (IoU ≥ 0.5, COCO greedy rule) by a detection flagged unknown;
* **AP of the unknown class** (OpenDet's AP_U): COCO AP50 of the flagged detections as one class "unknown"
  against the unknown ground truth, flagged detections ranked by their OOD score;
* **A-OSE** (absolute open-set error, Miller et al. ICRA 2018; Dhamija et al. WACV 2020): the number of
  detections labelled with a known class that are not a true positive of a known object and overlap an unknown
  object with IoU ≥ 0.5;
* **Wilderness Impact** (Dhamija et al. 2020) at recall level R (0.8 as ORE/OpenDet): WI = P_K / P_{K∪U} − 1
  with the known-class detections taken, per class by decreasing confidence, until that class reaches recall R
  (all of them if it never does); P_{K∪U} = TP / (TP + FP), P_K leaves out the FPs on unknown objects; counts
  pooled over classes, so WI = FP_U / (TP + FP − FP_U);
* **known-class mAP** (AP@[.5:.95], AP50): the detections labelled with a known class only.

Per-kind unknown recall (``near``/``far`` from ``GroundTruth.kind`` = 1/2) follows FindMeIfYouCan's split of
anomalies by how far they are from the known classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import OODLensError
from .ap import average_precision, check_label_range
from .boxes import UNKNOWN, Detections, GroundTruth
from .matching import _np, box_iou_rows, greedy_match, group_pairs, score_vector


def _mask(flagged: Any, n: int) -> np.ndarray:
    f = _np(flagged)
    if f.ndim != 1 or f.shape[0] != n:
        raise OODLensError(f"flagged must have one entry per detection, shape ({n},), got {f.shape}")
    if f.dtype != bool and not np.isin(f, (0, 1)).all():
        raise OODLensError("flagged must be a boolean mask (True = flagged unknown), got values other than 0/1; "
                           "pass scores > threshold")
    return f.astype(bool)


def _same_images(dets: Detections, gt: GroundTruth) -> None:
    if dets.n_images != gt.n_images:
        raise OODLensError(f"detections cover {dets.n_images} images but the ground truth {gt.n_images}")
    check_label_range(gt, dets.num_classes)


def _unknown_match(dets: Detections, gt: GroundTruth, sel: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Class-agnostic greedy match (IoU 0.5) of the selected detections to the unknown ground truth."""
    unk = np.flatnonzero(_np(gt.labels) == UNKNOWN)
    d = np.flatnonzero(sel)
    out = np.full(dets.n, -1, dtype=np.int64)
    if unk.size == 0:
        return out
    det_gt, _, _ = greedy_match(scores[d], _np(dets.boxes)[d], _np(dets.image)[d], _np(gt.boxes)[unk],
                                _np(gt.image)[unk], (0.5,), None)
    out[d] = np.where(det_gt[0] >= 0, unk[np.maximum(det_gt[0], 0)], -1)
    return out


def unknown_recall(dets: Detections, gt: GroundTruth, flagged: Any, scores: Any) -> dict[str, float]:
    """Recall of unknown objects by flagged detections (IoU ≥ 0.5), overall and per kind (near/far)."""
    _same_images(dets, gt)
    f, s = _mask(flagged, dets.n), score_vector(scores, dets.n, "OOD scores")
    m = _unknown_match(dets, gt, f, s)
    labels = _np(gt.labels)
    found = np.zeros(gt.n, bool)
    found[m[m >= 0]] = True
    unk = labels == UNKNOWN
    out = {"unknown_recall": float(found[unk].mean()) if unk.any() else float("nan")}
    if gt.kind is not None:
        kind = _np(gt.kind)
        for name, k in (("near", 1), ("far", 2)):
            sel = unk & (kind == k)
            out[f"unknown_recall_{name}"] = float(found[sel].mean()) if sel.any() else float("nan")
    return out


def unknown_ap(dets: Detections, gt: GroundTruth, flagged: Any, scores: Any) -> float:
    """AP50 of the 'unknown' class: flagged detections, ranked by OOD score, against unknown ground truth."""
    _same_images(dets, gt)
    f, s = _mask(flagged, dets.n), score_vector(scores, dets.n, "OOD scores")
    labels = _np(gt.labels)
    if not (labels == UNKNOWN).any():
        return float("nan")
    r = average_precision(s[f], _np(dets.boxes)[f], _np(dets.image)[f], np.zeros(int(f.sum()), np.int64),
                          _np(gt.boxes), _np(gt.image), np.where(labels == UNKNOWN, 0, -1), 1, (0.5,))
    return r.ap()


def _known_tp(dets: Detections, gt: GroundTruth, known: np.ndarray) -> np.ndarray:
    """True positive of a known object at IoU 0.5 (COCO rule, per class), among the known-labelled detections."""
    k = dets.num_classes
    d = np.flatnonzero(known)
    r = average_precision(_np(dets.confidence)[d], _np(dets.boxes)[d], _np(dets.image)[d], _np(dets.classes)[d],
                          _np(gt.boxes), _np(gt.image), _np(gt.labels), k, (0.5,))
    tp = np.zeros(dets.n, bool)
    tp[d] = r.det_gt[0] >= 0
    return tp


def a_ose(dets: Detections, gt: GroundTruth, flagged: Any, known_tp: np.ndarray | None = None) -> int:
    """Absolute open-set error: known-labelled detections, not true positives of a known object, on an unknown
    object (IoU ≥ 0.5). ``known_tp`` (N,): precomputed true-positive mask of the known-labelled detections."""
    known = ~_mask(flagged, dets.n)
    tp = _known_tp(dets, gt, known) if known_tp is None else known_tp
    return int(_overlaps_unknown(dets, gt, known & ~tp).sum())


def _overlaps_unknown(dets: Detections, gt: GroundTruth, sel: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Selected detections with IoU ≥ ``iou`` with some unknown object of their image."""
    unk = np.flatnonzero(_np(gt.labels) == UNKNOWN)
    d = np.flatnonzero(sel)
    out = np.zeros(dets.n, bool)
    if d.size == 0 or unk.size == 0:
        return out
    di, gi = group_pairs(_np(dets.image)[d], _np(gt.image)[unk])
    hit = box_iou_rows(_np(dets.boxes)[d][di], _np(gt.boxes)[unk][gi]) >= iou
    out[d[di[hit]]] = True
    return out


def wilderness_impact(dets: Detections, gt: GroundTruth, flagged: Any, recall: float = 0.8,
                      known_tp: np.ndarray | None = None) -> float:
    """WI = P_K / P_{K∪U} − 1 at the given known-class recall level (pooled over classes)."""
    if not 0 < recall <= 1:
        raise OODLensError(f"Wilderness Impact recall level must be in (0, 1], got {recall}")
    _same_images(dets, gt)
    known = ~_mask(flagged, dets.n)
    tp = _known_tp(dets, gt, known) if known_tp is None else known_tp
    fp_u = _overlaps_unknown(dets, gt, known & ~tp)
    d = np.flatnonzero(known)
    cls, conf = _np(dets.classes)[d], _np(dets.confidence)[d].astype(np.float64)
    order = np.lexsort((-conf, cls))
    cls, t, u = cls[order], tp[d][order], fp_u[d][order]
    n_gt = np.bincount(_np(gt.labels)[_np(gt.labels) >= 0], minlength=dets.num_classes)
    starts = np.searchsorted(cls, cls, "left")
    ctp = np.cumsum(t) - np.where(starts > 0, np.cumsum(t)[np.maximum(starts - 1, 0)], 0)
    reached = ctp >= recall * n_gt[cls] - 1e-12
    # the prefix of each class up to the first detection reaching the recall level (all when never reached)
    first = np.full(dets.num_classes, np.iinfo(np.int64).max)
    np.minimum.at(first, cls[reached], np.flatnonzero(reached))
    take = np.arange(cls.size) <= first[cls]
    tp_n, fp_n, fpu_n = int(t[take].sum()), int((~t[take]).sum()), int(u[take].sum())
    if tp_n + fp_n - fpu_n == 0:
        return float("nan")
    return fpu_n / (tp_n + fp_n - fpu_n)


def open_set_metrics(dets: Detections, gt: GroundTruth, flagged: Any, scores: Any, wi_recall: float = 0.8,
                     ) -> dict[str, float]:
    """Every open-set metric in one dict (see the module docstring for definitions)."""
    _same_images(dets, gt)
    f = _mask(flagged, dets.n)
    score_vector(scores, dets.n, "OOD scores")
    if not 0 < wi_recall <= 1:
        raise OODLensError(f"Wilderness Impact recall level must be in (0, 1], got {wi_recall}")
    known = np.flatnonzero(~f)
    kd = dets.subset(known)
    r = average_precision(_np(kd.confidence), _np(kd.boxes), _np(kd.image), _np(kd.classes), _np(gt.boxes),
                          _np(gt.image), _np(gt.labels), dets.num_classes)
    out = {"known_map": r.ap(), "known_ap50": r.ap(0.5)}
    tp = np.zeros(dets.n, bool)  # true positives at IoU 0.5, from the same matching as the known mAP
    tp[known] = r.det_gt[np.flatnonzero(np.isclose(r.iou_thresholds, 0.5))[0]] >= 0
    out.update(unknown_recall(dets, gt, f, scores))
    out["unknown_ap50"] = unknown_ap(dets, gt, f, scores)
    out["a_ose"] = a_ose(dets, gt, f, tp)
    out[f"wi@{wi_recall:g}"] = wilderness_impact(dets, gt, f, wi_recall, tp)
    return out
