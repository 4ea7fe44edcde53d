"""Component-level metrics exactly as SegmentMeIfYouCan (Chan et al., NeurIPS 2021 Datasets & Benchmarks;
``road-anomaly-benchmark``, ``metrics/instance_segmentation.py``).

Per frame, with labels 0 normal / 1 anomaly / ignore:

1. predicted anomaly = score > t (t: the pooled pixel-F1-optimal threshold), set to 0 on ignore pixels;
2. ground-truth instances = 8-connected components of the anomaly pixels, predicted components = 8-connected
   components of the prediction (``scipy.ndimage.label`` with a 3×3 structure);
3. predicted components with fewer than ``min_segment`` pixels are removed (set to no prediction); ground-truth
   instances with fewer than ``min_instance`` pixels become ignore; then only pixels whose label is not ignore
   are kept (the region of interest; a user ``roi`` is applied here too);
4. for a ground-truth instance k with the set Ŝ of predicted components overlapping it,
   sIoU(k) = |k ∩ Ŝ| / |(k ∪ Ŝ) \\ A(k)|, A(k) = pixels of other ground-truth instances — i.e.
   |k ∩ Ŝ| / (|k| + |Ŝ ∩ normal pixels|); symmetrically sIoU of a predicted component; PPV(ĵ) = |ĵ ∩ anomaly| / |ĵ|;
5. over all frames and each τ ∈ linspace(0.25, 0.75, 11): TP = #{k: sIoU(k) ≥ τ}, FN = #{k: sIoU(k) < τ},
   FP = #{ĵ: PPV(ĵ) < τ}, F1(τ) = 2TP / (2TP + FN + FP); mean F1 = the average over τ. Mean sIoU (over
   ground-truth instances) and mean PPV (over predicted components) are pooled over all frames.

Defaults ``min_segment`` = 500, ``min_instance`` = 100 are the reference's anomaly track (2048 × 1024 frames);
its obstacle track uses 50 and 10. The counts come from one contingency table (ground-truth × predicted
components) per frame instead of a loop over instances; the values are the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import OODLensError
from ._validate import check_maps, to_numpy

TAUS = np.linspace(0.25, 0.75, 11)
_EIGHT = np.ones((3, 3), dtype=np.int32)


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy.ndimage import label

    return label(mask, structure=_EIGHT)


@dataclass
class FrameComponents:
    """One frame's component statistics (values per ground-truth instance / predicted component)."""

    siou_gt: np.ndarray
    siou_pred: np.ndarray
    ppv: np.ndarray
    size_gt: np.ndarray
    size_pred: np.ndarray


def frame_components(scores: Any, labels: Any, threshold: float, *, min_segment: int = 500,
                     min_instance: int = 100, ignore_index: int = 255, roi: Any = None) -> FrameComponents:
    """Component statistics of one (H, W) frame: anomaly predicted where ``scores > threshold``."""
    s, lab = to_numpy(scores, "scores"), to_numpy(labels, "labels")
    r = None if roi is None else to_numpy(roi, "roi") != 0
    check_maps(s, lab, r)
    if s.ndim != 2:
        raise OODLensError(f"frame_components takes one (H, W) frame, got shape {s.shape}")
    if np.issubdtype(s.dtype, np.floating) and np.isnan(s).any():
        raise OODLensError(f"scores have {int(np.isnan(s).sum())} NaN value(s)")
    bad = ~np.isin(lab, (0, 1, ignore_index))
    if bad.any():
        raise OODLensError(f"labels must be 0 (normal), 1 (anomaly) or {ignore_index} (ignore), got "
                           f"{sorted(np.unique(lab[bad]).tolist())[:5]}")
    ignore = lab == ignore_index
    gt, n_gt = _label(lab == 1)
    pred, n_pred = _label((s > threshold) & ~ignore)
    if n_pred:
        size = np.bincount(pred.ravel(), minlength=n_pred + 1)
        small = size < min_segment
        small[0] = False
        pred = np.where(small[pred], 0, pred)
    if n_gt:
        size = np.bincount(gt.ravel(), minlength=n_gt + 1)
        tiny = size < min_instance
        tiny[0] = False
        ignore = ignore | tiny[gt]
    keep = ~ignore if r is None else (~ignore & r)
    g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    table = np.bincount(g * (n_pred + 1) + p, minlength=(n_gt + 1) * (n_pred + 1)).reshape(n_gt + 1, n_pred + 1)
    return _from_table(table)


def _from_table(table: np.ndarray) -> FrameComponents:
    """Statistics from the contingency table (row 0 / column 0: no instance / no prediction)."""
    gt_size, pred_size = table.sum(1), table.sum(0)
    gt_ids, pred_ids = np.flatnonzero(gt_size[1:]) + 1, np.flatnonzero(pred_size[1:]) + 1  # present in the ROI
    cross = table[np.ix_(gt_ids, pred_ids)]
    hit = (cross > 0).astype(np.int64)
    # sIoU(k) = Σ_{ĵ∈Ŝ} |k∩ĵ| / (|k| + Σ_{ĵ∈Ŝ} |ĵ ∩ normal|): the other instances' pixels are left out of the union
    inter_gt = cross.sum(1)
    siou_gt = inter_gt / (gt_size[gt_ids] + hit @ table[0, pred_ids]) if gt_ids.size else np.zeros(0)
    inter_pred = cross.sum(0)
    siou_pred = inter_pred / (pred_size[pred_ids] + hit.T @ table[gt_ids, 0]) if pred_ids.size else np.zeros(0)
    ppv = inter_pred / pred_size[pred_ids] if pred_ids.size else np.zeros(0)
    return FrameComponents(siou_gt.astype(np.float64), siou_pred.astype(np.float64), ppv.astype(np.float64),
                           gt_size[gt_ids], pred_size[pred_ids])


@dataclass
class ComponentMetrics:
    """Accumulates :class:`FrameComponents` over frames and aggregates as the reference does."""

    taus: np.ndarray = field(default_factory=lambda: TAUS.copy())
    frames: list[FrameComponents] = field(default_factory=list)

    def add(self, frame: FrameComponents) -> "ComponentMetrics":
        self.frames.append(frame)
        return self

    def counts(self) -> dict[str, np.ndarray]:
        """TP, FN, FP per τ (summed over frames)."""
        siou = np.concatenate([f.siou_gt for f in self.frames]) if self.frames else np.zeros(0)
        ppv = np.concatenate([f.ppv for f in self.frames]) if self.frames else np.zeros(0)
        tp = (siou[None, :] >= self.taus[:, None]).sum(1)
        return {"tp": tp, "fn": siou.size - tp, "fp": (ppv[None, :] < self.taus[:, None]).sum(1)}

    def compute(self) -> dict[str, float]:
        """Mean sIoU (ground truth), mean sIoU (predicted), mean PPV, F1 at τ = 0.25 / 0.5 / 0.75 and mean F1.
        A mean over no component is NaN (e.g. PPV when nothing is predicted), as in the reference; F1 with
        no instance and no predicted component is NaN too (0 / 0)."""
        c = self.counts()
        den = 2 * c["tp"] + c["fn"] + c["fp"]
        f1 = np.where(den > 0, 2 * c["tp"] / np.maximum(den, 1), np.nan)

        def mean(name: str) -> float:
            v = np.concatenate([getattr(f, name) for f in self.frames]) if self.frames else np.zeros(0)
            return float(v.mean()) if v.size else float("nan")

        out = {"siou": mean("siou_gt"), "siou_pred": mean("siou_pred"), "ppv": mean("ppv"),
               "f1_mean": float(f1.mean()), "n_instances": int(sum(f.siou_gt.size for f in self.frames)),
               "n_predicted": int(sum(f.ppv.size for f in self.frames))}
        for t in (0.25, 0.5, 0.75):
            out[f"f1_{int(t * 100)}"] = float(f1[int(np.argmin(np.abs(self.taus - t)))])
        return out


def component_metrics(scores: Any, labels: Any, threshold: float, *, min_segment: int = 500,
                      min_instance: int = 100, ignore_index: int = 255, roi: Any = None) -> dict[str, float]:
    """Component metrics of (B, H, W) (or one (H, W)) score maps at ``threshold`` (anomaly where score > t)."""
    s, lab = to_numpy(scores, "scores"), to_numpy(labels, "labels")
    r = None if roi is None else to_numpy(roi, "roi")
    check_maps(s, lab, r)
    if s.ndim == 2:
        s, lab, r = s[None], lab[None], None if r is None else r[None]
    acc = ComponentMetrics()
    for i in range(s.shape[0]):  # frames: scipy labels one image at a time
        acc.add(frame_components(s[i], lab[i], threshold, min_segment=min_segment, min_instance=min_instance,
                                 ignore_index=ignore_index, roi=None if r is None else r[i]))
    return acc.compute()
