"""One call for a data set held in memory: pooled pixel metrics (default), per-image means beside them, and the
SegmentMeIfYouCan component metrics at the pooled pixel-F1-optimal threshold.

Conventions, stated in every table: anomaly pixels are the positive class; *pooled* = every valid pixel of the
data set in one ranking (SegmentMeIfYouCan, Fishyscapes); *per-image* = the mean over frames of each frame's
metric (the StreetHazards reference code), over frames that hold both anomaly and normal pixels only. A frame
without anomaly pixels therefore counts in the pooled metrics (its normal pixels) but is skipped per image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import OODLensError
from ..metrics.ood import curves
from ._validate import check_maps, flat_pixels, to_numpy
from .components import component_metrics
from .streaming import DEFAULT_BITS, StreamingPixelMetrics


def _valid(scores: Any, labels: Any, roi: Any, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    s, lab, r, _ = flat_pixels(scores, labels, roi)
    if np.isnan(s).any():
        raise OODLensError(f"scores have {int(np.isnan(s).sum())} NaN value(s)")
    keep = lab != ignore_index
    if r is not None:
        keep &= r.astype(bool)
    bad = keep & (lab > 1)
    if bad.any():
        raise OODLensError(f"labels must be 0 (normal), 1 (anomaly) or {ignore_index} (ignore); got "
                           f"{sorted(np.unique(lab[bad]).tolist())[:5]}")
    return s[keep], lab[keep]


def exact_pixel_metrics(scores: Any, labels: Any, roi: Any = None, ignore_index: int = 255, level: float = 0.95
                        ) -> dict[str, float]:
    """The sort-based pooled AUROC / AP / FPR at ``level`` TPR (memory grows with the pixels: for checks)."""
    s, lab = _valid(scores, labels, roi, ignore_index)
    pos = lab == 1
    if not pos.any() or pos.all():
        raise OODLensError(f"pixel metrics need anomaly and normal pixels, got {int(pos.sum())} anomaly and "
                           f"{int((~pos).sum())} normal pixel(s) (after ignore and region-of-interest masks)")
    c = curves(s[~pos], s[pos])[0]
    return {"auroc": c.auroc(), "ap": c.average_precision(), "fpr95": c.fpr_at_tpr(level)}


def per_image_metrics(scores: Any, labels: Any, roi: Any = None, ignore_index: int = 255, level: float = 0.95
                      ) -> dict[str, float]:
    """Mean over frames of each frame's exact AUROC / AP / FPR95; frames without both classes are skipped
    (``n_skipped``). All NaN when no frame qualifies."""
    s, lab = to_numpy(scores, "scores"), to_numpy(labels, "labels")
    r = None if roi is None else to_numpy(roi, "roi")
    check_maps(s, lab, r)
    if s.ndim == 2:
        s, lab, r = s[None], lab[None], None if r is None else r[None]
    vals, skipped = [], 0
    for i in range(s.shape[0]):  # one sort per frame
        fs, fl = _valid(s[i], lab[i], None if r is None else r[i], ignore_index)
        pos = fl == 1
        if not pos.any() or pos.all():
            skipped += 1
            continue
        c = curves(fs[~pos], fs[pos])[0]
        vals.append((c.auroc(), c.average_precision(), c.fpr_at_tpr(level)))
    m = np.mean(vals, axis=0) if vals else np.full(3, np.nan)
    return {"auroc": float(m[0]), "ap": float(m[1]), "fpr95": float(m[2]), "n_frames": len(vals),
            "n_skipped": skipped}


def evaluate(scores: Any, labels: Any, roi: Any = None, *, ignore_index: int = 255, per_image: bool = True,
             components: bool = True, min_segment: int = 500, min_instance: int = 100, bits: int | None = None
             ) -> dict[str, dict[str, float]]:
    """{"pooled": streamed AUROC / AP / FPR95 / best F1 / threshold, "per_image": ..., "components": sIoU /
    PPV / F1} for (B, H, W) score maps and labels (0 normal, 1 anomaly, ``ignore_index``).

    ``bits``: the coarse bin resolution (default: 22, or 20 below 2²² pixels, where a smaller histogram is
    cheaper to set up and read; bins with more than 256 pixels are counted per float32 value either way).
    Raises if no valid pixel is an anomaly (or none is normal): pooled metrics are undefined there."""
    if bits is None:
        bits = DEFAULT_BITS if np.size(to_numpy(labels, "labels")) >= 1 << 22 else 20
    acc = StreamingPixelMetrics(ignore_index=ignore_index, bits=bits).update(scores, labels, roi)
    counts = acc.counts()
    if counts.n_pos + counts.n_neg == 0:
        raise OODLensError("no pixel left to evaluate: every pixel is ignored or outside the region of interest")
    out = {"pooled": counts.metrics()}
    if per_image:
        out["per_image"] = per_image_metrics(scores, labels, roi, ignore_index)
    if components:
        # anomaly where score ≥ t (the binned curve's cut) ⇔ score > the float32 just below t
        t = np.nextafter(np.float32(out["pooled"]["threshold"]), np.float32(-np.inf))
        s32 = to_numpy(scores, "scores").astype(np.float32, copy=False)
        out["components"] = component_metrics(s32, labels, float(t), min_segment=min_segment,
                                              min_instance=min_instance, ignore_index=ignore_index, roi=roi)
    return out
