"""COCO-format results and annotations, the format every detection codebase exports, to and from
:class:`Detections` / :class:`GroundTruth`.

Annotations: ``{"images": [{"id"}], "annotations": [{"image_id", "category_id", "bbox": [x, y, w, h]}],
"categories": [{"id", "name"}]}``. Categories named in ``unknown`` (by name or id) become the label
:data:`~oodlens.detection.boxes.UNKNOWN`; the others are numbered 0..K−1 by increasing id. Images are numbered
by increasing id.

Results: ``[{"image_id", "category_id", "bbox", "score"}, ...]``, optionally with per-box ``"logits"`` (raw,
``background`` says where the background column is), or ``"cls_prob"`` (probabilities, e.g. VOS/detectron2
exports with the background last: stored as log-probabilities), and ``"features"`` (ROI vector). Without
logits or probabilities, a box gets log-probabilities with its score on its category and the rest spread evenly
(so logit-based OOD scores reduce to functions of the confidence — say so when reporting them).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

import numpy as np
import torch

from ..errors import OODLensError
from .boxes import UNKNOWN, Detections, GroundTruth
from .matching import _np, score_vector


def _load(x: Any, what: str) -> Any:
    if isinstance(x, (str, os.PathLike)):
        try:
            with open(x) as f:
                return json.load(f)
        except FileNotFoundError:
            raise OODLensError(f"{what}: no such file {x}") from None
        except json.JSONDecodeError as e:
            raise OODLensError(f"{what}: {x} is not valid JSON ({e})") from None
    return x


def _field(records: Any, key: str, what: str) -> list:
    if not isinstance(records, list):
        raise OODLensError(f"{what} must be a list of records, got {type(records).__name__}")
    try:
        return [r[key] for r in records]
    except (KeyError, TypeError, IndexError):
        i = next(i for i, r in enumerate(records) if not isinstance(r, dict) or key not in r)
        raise OODLensError(f"{what}: record {i} has no field {key!r}") from None


def _array(values: list, dtype: Any, what: str, width: int | None = None) -> np.ndarray:
    """Numbers of every record as one array: a record with a non-number or another length raises, naming it."""
    if not values:
        return np.zeros((0, width) if width else (0,), dtype=dtype)
    try:
        a = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        a = None
    if a is None or (width is not None and (a.ndim != 2 or a.shape[1] != width)) or (
            width is None and len(values) and a.ndim != (2 if isinstance(values[0], (list, tuple)) else 1)):
        lens = {len(v) if isinstance(v, (list, tuple)) else -1 for v in values}
        shape = f"{width} numbers" if width else "numbers of one length" if len(lens) > 1 else "numbers"
        bad = next((i for i, v in enumerate(values) if not _numbers(v, width)), 0)
        raise OODLensError(f"{what}: every record's value must be {shape}; record {bad} has {values[bad]!r}"[:300])
    return a


def _numbers(v: Any, width: int | None) -> bool:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.ndim <= 1 and (width is None or a.shape == (width,))


def _xywh_to_xyxy(b: np.ndarray, what: str) -> np.ndarray:
    if b.ndim != 2 or b.shape[1] != 4:
        raise OODLensError(f"{what}: every bbox must be [x, y, w, h]")
    return np.c_[b[:, :2], b[:, :2] + b[:, 2:]]


class CocoIndex:
    """Image and category numbering of a COCO annotation file."""

    def __init__(self, annotations: Any, unknown: Iterable[Any] = ()):
        ann = _load(annotations, "annotations")
        if not isinstance(ann, dict) or "images" not in ann or "categories" not in ann:
            raise OODLensError("annotations must be a COCO dict with 'images', 'annotations' and 'categories'")
        self.data = ann
        self.image_ids = np.sort(_array(_field(ann["images"], "id", "images"), np.int64, "images' id"))
        dup = self.image_ids[1:][self.image_ids[1:] == self.image_ids[:-1]]
        if dup.size:
            raise OODLensError(f"images: image id {int(dup[0])} appears more than once")
        unknown = {str(u) for u in unknown}
        cat_ids = _array(_field(ann["categories"], "id", "categories"), np.int64, "categories' id")
        if np.unique(cat_ids).size != cat_ids.size:
            raise OODLensError("categories: a category id appears more than once")
        cats = [ann["categories"][i] for i in np.argsort(cat_ids, kind="stable")]
        self.unknown_ids = {int(c["id"]) for c in cats if str(c["id"]) in unknown or c.get("name") in unknown}
        named = {str(c["id"]) for c in cats} | {str(c.get("name")) for c in cats if "name" in c}
        if unknown - named:
            raise OODLensError(f"unknown categories {sorted(unknown - named)} are neither a category id nor a name of "
                               f"the annotations (categories: {[c.get('name', c['id']) for c in cats]})"[:400])
        if cats and len(self.unknown_ids) == len(cats):
            raise OODLensError("every category is marked unknown: at least one known class is needed")
        known = [c for c in cats if int(c["id"]) not in self.unknown_ids]
        self.class_names = [str(c.get("name", c["id"])) for c in known]
        self.category_ids = np.array([int(c["id"]) for c in known], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return int(self.category_ids.shape[0])

    def image_index(self, ids: Any, what: str) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.image_ids, ids)
        ok = (pos < self.image_ids.shape[0]) & (self.image_ids[np.minimum(pos, len(self.image_ids) - 1)] == ids)
        if not ok.all():
            raise OODLensError(f"{what}: image_id {int(ids[~ok][0])} is not in the annotations' images")
        return pos

    def labels(self, cat_ids: Any, what: str, allow_unknown: bool = True) -> np.ndarray:
        cat_ids = np.asarray(cat_ids, dtype=np.int64)
        pos = np.searchsorted(self.category_ids, cat_ids)
        ok = (pos < len(self.category_ids)) & (self.category_ids[np.minimum(pos, max(len(self.category_ids) - 1, 0))] == cat_ids)
        unk = np.isin(cat_ids, list(self.unknown_ids)) if self.unknown_ids else np.zeros_like(ok)
        bad = ~ok & (~unk if allow_unknown else np.ones_like(ok))
        if bad.any():
            raise OODLensError(f"{what}: category_id {int(cat_ids[bad][0])} is not a known category")
        return np.where(ok, pos, UNKNOWN)


def read_ground_truth(annotations: Any, unknown: Iterable[Any] = ()) -> tuple[GroundTruth, CocoIndex]:
    """Ground truth of a COCO annotation file (dict or path); ``unknown`` categories get label −1."""
    idx = CocoIndex(annotations, unknown)
    anns = idx.data.get("annotations", [])
    boxes = _xywh_to_xyxy(_array(_field(anns, "bbox", "annotations"), np.float64, "annotations' bbox", 4).reshape(-1, 4), "annotations")
    img = idx.image_index(_field(anns, "image_id", "annotations"), "annotations")
    lab = idx.labels(_field(anns, "category_id", "annotations"), "annotations")
    return GroundTruth(torch.from_numpy(img), torch.from_numpy(boxes), torch.from_numpy(lab), len(idx.image_ids)), idx


def read_results(results: Any, index: CocoIndex, background: int | None = None) -> Detections:
    """Detections of a COCO results list (or path), numbered as ``index`` (from :func:`read_ground_truth`)."""
    res = _load(results, "results")
    if not isinstance(res, list):
        raise OODLensError("results must be a list of {'image_id', 'category_id', 'bbox', 'score'} records")
    k = index.num_classes
    boxes = _xywh_to_xyxy(_array(_field(res, "bbox", "results"), np.float64, "results' bbox", 4).reshape(-1, 4), "results")
    img = index.image_index(_field(res, "image_id", "results"), "results")
    cls = index.labels(_field(res, "category_id", "results"), "results", allow_unknown=False)
    score = _array(_field(res, "score", "results"), np.float64, "results' score")
    first = res[0] if res else {}
    extra = {}
    if "features" in first:
        extra["features"] = torch.tensor(_array(_field(res, "features", "results"), np.float32, "results' features"))
    if "logits" in first:
        logits = torch.tensor(_array(_field(res, "logits", "results"), np.float32, "results' logits"))
        bg = background
    elif "cls_prob" in first:
        p = _array(_field(res, "cls_prob", "results"), np.float64, "results' cls_prob")
        logits = torch.from_numpy(np.log(np.clip(p, 1e-12, None))).float()
        bg = background if background is not None else (-1 if p.shape[1] == k + 1 else None)
    else:
        if score.size and not ((score >= 0) & (score <= 1)).all():
            raise OODLensError("results: without 'logits' or 'cls_prob' the scores must be probabilities in [0, 1] "
                               f"(they stand for the class probability), got values in {score.min():g}..{score.max():g}")
        rest = np.log(np.clip((1 - score) / max(k - 1, 1), 1e-12, None))
        lg = np.repeat(rest[:, None], k, 1)
        lg[np.arange(len(res)), cls] = np.log(np.clip(score, 1e-12, None))
        logits, bg = torch.from_numpy(lg).float(), None
    return Detections(torch.from_numpy(img), torch.from_numpy(boxes), logits, torch.from_numpy(score),
                      len(index.image_ids), k, bg, torch.from_numpy(cls), extra)


def read_coco(annotations: Any, results: Any, unknown: Iterable[Any] = (), background: int | None = None,
              ) -> tuple[Detections, GroundTruth, CocoIndex]:
    """Both files at once: ``(detections, ground_truth, index)``."""
    gt, idx = read_ground_truth(annotations, unknown)
    return read_results(results, idx, background), gt, idx


def ground_truth_to_coco(gt: GroundTruth, num_classes: int) -> dict:
    """A COCO annotation dict (image ids = image index; category id = class + 1; unknown = num_classes + 1)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise OODLensError(f"num_classes must be a positive integer, got {num_classes!r}")
    if gt.n and int(gt.labels.max()) >= num_classes:  # label K would be written as the 'unknown' category
        raise OODLensError(f"ground truth has label {int(gt.labels.max())} but num_classes={num_classes}")
    b = gt.boxes.double().numpy()
    wh = b[:, 2:] - b[:, :2]
    lab = gt.labels.numpy()
    cat = np.where(lab >= 0, lab + 1, num_classes + 1)
    anns = [{"id": i + 1, "image_id": int(im), "category_id": int(c), "bbox": [float(v) for v in (x, y, w, h)],
             "area": float(w * h), "iscrowd": 0}
            for i, (im, c, (x, y), (w, h)) in enumerate(zip(gt.image.numpy(), cat, b[:, :2], wh))]
    cats = [{"id": c + 1, "name": str(c)} for c in range(num_classes)] + [{"id": num_classes + 1, "name": "unknown"}]
    return {"images": [{"id": i} for i in range(gt.n_images)], "annotations": anns, "categories": cats}


def detections_to_coco(dets: Detections, scores: Any = None) -> list[dict]:
    """A COCO results list (category id = class + 1), ranked by ``scores`` (default: confidence)."""
    b = dets.boxes.double().numpy()
    s = _np(dets.confidence).astype(np.float64) if scores is None else score_vector(scores, dets.n, "scores")
    return [{"image_id": int(im), "category_id": int(c) + 1, "bbox": [float(x), float(y), float(x2 - x), float(y2 - y)],
             "score": float(sc)} for im, c, (x, y, x2, y2), sc in zip(dets.image.numpy(), dets.classes.numpy(), b, s)]
