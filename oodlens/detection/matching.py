"""Greedy detection ↔ ground-truth matching, COCO's rule, vectorised over all images at once.

COCO (``pycocotools.cocoeval.evaluateImg``): within a group (an image, and a class unless class-agnostic), the
detections are taken by decreasing score; each takes the unmatched ground truth of highest IoU ≥ t (ties go to
the later ground truth); at most ``max_dets`` detections per group are evaluated. Here the loop runs over the
*rank within the group* (≤ ``max_dets`` steps), each step matching the r-th detection of every group at once:
groups share no ground truth, so their steps are independent. IoUs are computed only for pairs in the same
group (no N×M matrix).
"""

from __future__ import annotations

import numpy as np
import torch

#: COCO's ten IoU thresholds, exactly as pycocotools builds them
COCO_IOUS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def score_vector(scores, n: int, name: str = "scores") -> np.ndarray:
    """One finite float64 score per detection; another length or NaN/inf raises, naming ``name``."""
    from ..errors import OODLensError

    try:
        s = np.asarray(_np(scores), dtype=np.float64)
    except (TypeError, ValueError):
        raise OODLensError(f"{name} must be numbers") from None
    if s.ndim != 1 or s.shape[0] != n:
        raise OODLensError(f"{name} must have one value per detection, shape ({n},), got {s.shape}")
    if not np.isfinite(s).all():
        raise OODLensError(f"{name} have {int((~np.isfinite(s)).sum())} NaN or infinite value(s) "
                           f"(first at detection {int(np.flatnonzero(~np.isfinite(s))[0])})")
    return s


def group_pairs(d_group: np.ndarray, g_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, ground truth) index pair with the same group id, ordered by detection."""
    g_order = np.argsort(g_group, kind="stable")
    gs = g_group[g_order]
    start = np.searchsorted(gs, d_group, "left")
    count = np.searchsorted(gs, d_group, "right") - start
    di = np.repeat(np.arange(d_group.shape[0]), count)
    offs = np.arange(di.shape[0]) - np.repeat(np.cumsum(count) - count, count)
    gi = g_order[np.repeat(start, count) + offs]
    return di, gi


def box_iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of a[i] with b[i] (xyxy, float64), as pycocotools computes it (no +1 on widths)."""
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    w = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    h = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def stable_order(*keys: np.ndarray) -> np.ndarray:
    """``np.lexsort(keys)`` (last key primary, ties kept in input order) by successive stable argsorts, which is
    faster on large arrays; integer keys with a small range are sorted as int16 (radix sort)."""
    n = keys[0].shape[0]
    order = np.arange(n)
    for k in keys:
        v = k[order]
        if v.dtype.kind in "iu" and n and int(v.min()) >= 0 and int(v.max()) < 2**15:
            v = v.astype(np.int16)
        order = order[np.argsort(v, kind="stable")]
    return order


def ranks_in_groups(scores: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Rank of each detection within its group by decreasing score (stable: earlier rows first on ties)."""
    n = scores.shape[0]
    order = stable_order(-scores.astype(np.float64), group)
    g = group[order]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    seg = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - seg
    return rank


def greedy_match(scores, d_boxes, d_group, g_boxes, g_group, thresholds=(0.5,), max_dets: int | None = 100,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCO greedy matching at each IoU threshold.

    Returns ``det_gt`` (T, N): the matched ground-truth row or −1; ``rank`` (N,): rank in the group; ``kept``
    (N,): rank < max_dets (detections beyond are not evaluated, as COCO's maxDets).
    """
    s, db, gb = _np(scores), _np(d_boxes), _np(g_boxes)
    dg, gg = _np(d_group).astype(np.int64), _np(g_group).astype(np.int64)
    n, thresholds = s.shape[0], np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    rank = ranks_in_groups(s, dg)
    kept = rank < max_dets if max_dets is not None else np.ones(n, dtype=bool)
    det_gt = np.full((thresholds.shape[0], n), -1, dtype=np.int64)
    if n == 0 or gb.shape[0] == 0:
        return det_gt, rank, kept
    di, gi = group_pairs(np.where(kept, dg, np.iinfo(np.int64).min), gg)
    iou = box_iou_rows(db[di], gb[gi])
    # by rank, then detection, then IoU, then ground-truth row (group_pairs orders pairs by detection, then row)
    order = stable_order(iou, di, rank[di])
    di, gi, iou, r = di[order], gi[order], iou[order], rank[di[order]]
    bounds = np.searchsorted(r, np.arange(int(r.max()) + 2 if r.size else 1))
    for ti, t in enumerate(thresholds):
        need = min(t, 1 - 1e-10)
        taken = np.zeros(gb.shape[0], dtype=bool)
        for k in range(bounds.shape[0] - 1):
            a, b = bounds[k], bounds[k + 1]
            if a == b:
                continue
            ok = (iou[a:b] >= need) & ~taken[gi[a:b]]
            d, g = di[a:b][ok], gi[a:b][ok]
            if d.size == 0:
                continue
            last = np.r_[d[1:] != d[:-1], True]  # the last pair of each detection: highest IoU, later ground truth
            det_gt[ti, d[last]] = g[last]
            taken[g[last]] = True
    return det_gt, rank, kept


def assign(dets, gt, iou: float = 0.5) -> np.ndarray:
    """Ground-truth row matched to each detection (−1 if none): class-agnostic COCO greedy matching per image
    by decreasing confidence at IoU ≥ ``iou`` (every detection considered)."""
    det_gt, _, _ = greedy_match(_np(dets.confidence).astype(np.float64), _np(dets.boxes), _np(dets.image),
                                _np(gt.boxes), _np(gt.image), (iou,), None)
    return det_gt[0]
