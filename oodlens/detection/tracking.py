"""A small IoU tracker for detections without track ids: frame to frame, boxes are assigned to live tracks by
the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on cost 1 − IoU; a pair is kept when its IoU
is ≥ ``iou_min``; unassigned boxes start new tracks; a track not seen for more than ``max_age`` frames ends.
The loop runs over frames (the assignment is a per-frame step); each frame's IoUs are one small tensor op.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import OODLensError
from .boxes import Detections, check_boxes
from .matching import _np


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def track_boxes(boxes: Any, frame: Any, video: Any = None, iou_min: float = 0.3, max_age: int = 1) -> np.ndarray:
    """Track ids (N,) for boxes (N, 4) with their frame index (and video index: tracks never cross videos)."""
    from scipy.optimize import linear_sum_assignment

    b = _np(boxes).astype(np.float64)
    f = _np(frame).astype(np.int64)
    v = np.zeros_like(f) if video is None else _np(video).astype(np.int64)
    if b.ndim != 2 or b.shape[1] != 4 or f.shape != (b.shape[0],) or v.shape != f.shape:
        raise OODLensError(f"track_boxes needs boxes (N, 4) and frame/video (N,), got {b.shape}, {f.shape}, {v.shape}")
    if not 0.0 <= iou_min <= 1.0:
        raise OODLensError(f"iou_min must be in [0, 1], got {iou_min}")
    if not float(max_age).is_integer() or max_age < 0:
        raise OODLensError(f"max_age must be an integer ≥ 0 (frames a track may be unseen), got {max_age}")
    if (np.asarray(_np(frame)) % 1 != 0).any() or (video is not None and (np.asarray(_np(video)) % 1 != 0).any()):
        raise OODLensError("frame and video indices must be integers")
    check_boxes(b, "tracked boxes")
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((f, v))
    key = np.stack([v[order], f[order]], 1)
    cuts = np.r_[0, np.flatnonzero((key[1:] != key[:-1]).any(1)) + 1, order.size]
    out = np.full(b.shape[0], -1, dtype=np.int64)
    next_id = 0
    live_ids = np.zeros(0, np.int64)
    live_box = np.zeros((0, 4))
    live_seen = np.zeros(0, np.int64)
    cur_video = None
    for s, e in zip(cuts[:-1], cuts[1:]):
        idx = order[s:e]
        vid, fr = int(v[idx[0]]), int(f[idx[0]])
        if vid != cur_video:
            cur_video, live_ids, live_box, live_seen = vid, live_ids[:0], live_box[:0], live_seen[:0]
        alive = fr - live_seen <= max_age
        live_ids, live_box, live_seen = live_ids[alive], live_box[alive], live_seen[alive]
        ids = np.full(idx.size, -1, np.int64)
        if live_ids.size:
            iou = _iou_matrix(live_box, b[idx])
            r, c = linear_sum_assignment(1.0 - iou)
            ok = iou[r, c] >= iou_min
            ids[c[ok]] = live_ids[r[ok]]
            live_box[r[ok]] = b[idx][c[ok]]
            live_seen[r[ok]] = fr
        new = ids < 0
        ids[new] = np.arange(next_id, next_id + int(new.sum()))
        next_id += int(new.sum())
        live_ids = np.r_[live_ids, ids[new]]
        live_box = np.r_[live_box, b[idx][new]]
        live_seen = np.r_[live_seen, np.full(int(new.sum()), fr)]
        out[idx] = ids
    return out


def track_detections(dets: Detections, video: Any = None, iou_min: float = 0.3, max_age: int = 1) -> Detections:
    """The detections with ``track`` filled by :func:`track_boxes` (needs ``frame``); ``video`` per box."""
    from dataclasses import replace

    if dets.frame is None:
        raise OODLensError("tracking needs the frame index of every detection (Detections.frame)")
    import torch

    ids = track_boxes(dets.boxes, dets.frame, video, iou_min, max_age)
    return replace(dets, track=torch.from_numpy(ids))
