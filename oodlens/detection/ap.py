"""COCO-style average precision (bbox, area "all", maxDets 100, no crowd), vectorised over images and classes.

Exactly pycocotools' ``COCOeval.evaluate()/accumulate()``: greedy matching per (image, class) by decreasing score
at IoU t ∈ {0.50, 0.55, …, 0.95}; per class, detections over all images sorted by score; precision made
monotone from the right; sampled at the 101 recall points 0, 0.01, …, 1 (``searchsorted(recall, r, 'left')``,
0 beyond the last recall reached); AP = mean over recall points (and IoU thresholds for AP@[.5:.95]) of the
classes with ground truth. ``scores`` at those points are kept too (VOS chooses its threshold from them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boxes import Detections, GroundTruth
from .matching import COCO_IOUS, _np, greedy_match, score_vector, stable_order

#: pycocotools' recall points
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass(frozen=True)
class APResult:
    """``precision`` and ``scores`` (T, 101, K) as pycocotools' ``eval['precision'][:, :, :, 0, -1]``
    (−1 for classes without ground truth); ``det_gt`` (T, N): matched ground-truth row per detection."""

    precision: np.ndarray
    scores: np.ndarray
    iou_thresholds: np.ndarray
    det_gt: np.ndarray

    def ap(self, iou: float | None = None) -> float:
        """Mean AP over classes with ground truth; over all thresholds when ``iou`` is None (AP@[.5:.95])."""
        p = self.precision if iou is None else self.precision[np.isclose(self.iou_thresholds, iou)]
        valid = p > -1
        return float(p[valid].mean()) if valid.any() else float("nan")

    def per_class(self, iou: float | None = None) -> np.ndarray:
        p = self.precision if iou is None else self.precision[np.isclose(self.iou_thresholds, iou)]
        out = np.full(p.shape[2], np.nan)
        has = (p > -1).all(axis=(0, 1))
        out[has] = p[:, :, has].mean(axis=(0, 1))
        return out


def average_precision(scores, d_boxes, d_image, d_class, g_boxes, g_image, g_class, num_classes: int,
                      iou_thresholds=COCO_IOUS, max_dets: int = 100) -> APResult:
    """AP per class and IoU threshold from flat arrays (classes 0..num_classes−1; other labels are ignored)."""
    s = _np(scores).astype(np.float64)
    dc, gc = _np(d_class).astype(np.int64), _np(g_class).astype(np.int64)
    di, gimg = _np(d_image).astype(np.int64), _np(g_image).astype(np.int64)
    k = int(num_classes)
    use_g = (gc >= 0) & (gc < k)
    gsel = np.flatnonzero(use_g)
    thr = np.atleast_1d(np.asarray(iou_thresholds, dtype=np.float64))
    det_gt, rank, kept = greedy_match(s, _np(d_boxes), di * (k + 1) + dc, _np(g_boxes)[gsel],
                                      gimg[gsel] * (k + 1) + gc[gsel], thr, max_dets)
    det_gt = np.where(det_gt >= 0, gsel[np.maximum(det_gt, 0)], -1) if gsel.size else det_gt
    t_n, r_n = thr.shape[0], REC_THRS.shape[0]
    precision = np.full((t_n, r_n, k), -1.0)
    score_at = np.full((t_n, r_n, k), -1.0)
    npig = np.bincount(gc[use_g], minlength=k)
    # detections of each class over all images, by decreasing score; ties keep image order, then rank (COCO)
    ev = np.flatnonzero(kept & (dc >= 0) & (dc < k))
    order = ev[stable_order(rank[ev], di[ev], -s[ev], dc[ev])]
    cls, ss = dc[order], s[order]
    starts = np.searchsorted(cls, np.arange(k), "left")
    ends = np.searchsorted(cls, np.arange(k), "right")
    seg_start = np.repeat(starts, ends - starts)
    for ti in range(t_n):
        tp = (det_gt[ti, order] >= 0).astype(np.float64)
        ctp = np.cumsum(tp)
        tp_c = ctp - np.where(seg_start > 0, ctp[np.maximum(seg_start - 1, 0)], 0.0)
        fp_c = (np.arange(order.shape[0]) - seg_start + 1) - tp_c
        rc = tp_c / np.maximum(npig[cls], 1)
        pr = tp_c / (fp_c + tp_c + np.spacing(1))
        # exact segmented operations through complex keys (numpy orders complex numbers lexicographically):
        # running max from the right within each class, and searchsorted of the recall points per class
        key = (-cls + 1j * pr)[::-1]
        pr = np.maximum.accumulate(key).imag[::-1] if key.size else pr
        q = np.arange(k)[:, None] + 1j * REC_THRS[None, :]  # (K, R)
        idx = np.searchsorted(cls + 1j * rc, q.ravel(), "left").reshape(k, r_n)
        ok = idx < ends[:, None]
        pv = np.where(ok, pr[np.minimum(idx, max(order.shape[0] - 1, 0))] if order.size else 0.0, 0.0)
        sv = np.where(ok, ss[np.minimum(idx, max(order.shape[0] - 1, 0))] if order.size else 0.0, 0.0)
        has = npig > 0
        precision[ti][:, has] = pv[has].T
        score_at[ti][:, has] = sv[has].T
    return APResult(precision, score_at, thr, det_gt)


def check_label_range(gt: GroundTruth, num_classes: int) -> None:
    """Known ground-truth labels must be classes of the detector (0..num_classes−1); others would be dropped
    from the AP silently."""
    from ..errors import OODLensError

    if gt.n and int(gt.labels.max()) >= num_classes:
        raise OODLensError(f"ground truth has label {int(gt.labels.max())} but the detections have num_classes="
                           f"{num_classes} (known labels 0..{num_classes - 1}, unknown objects {-1})")


def coco_ap(dets: Detections, gt: GroundTruth, scores=None, iou_thresholds=COCO_IOUS, max_dets: int = 100) -> APResult:
    """Known-class AP of ``dets`` against ``gt`` (unknown ground truth is not a class here). ``scores`` ranks
    the detections (default: the detector's confidence)."""
    from ..errors import OODLensError

    if dets.n_images != gt.n_images:
        raise OODLensError(f"detections cover {dets.n_images} images but the ground truth {gt.n_images}")
    check_label_range(gt, dets.num_classes)
    s = dets.confidence if scores is None else score_vector(scores, dets.n, "AP ranking scores")
    return average_precision(s, dets.boxes, dets.image, dets.classes, gt.boxes, gt.image, gt.labels,
                             dets.num_classes, iou_thresholds, max_dets)
