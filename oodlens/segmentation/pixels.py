"""Any registered detector applied per pixel: a (B, D, h, w) map — logits for MSP, MaxLogit, Entropy, Energy,
GEN, SML; a feature map for Mahalanobis, KNN, ... — is a set of B·h·w rows of D numbers. Rows are scored by the
detector itself (never a copy of its formula), in blocks of whole images, and the (B, h, w) score map is
upsampled bilinearly to the label size (as the feature-based reference methods do).

    scorer = PixelScorer("energy").fit(train_logits)              # (B, C, H, W)
    maps = scorer.score(test_logits)                               # (B, H, W), higher = more anomalous
    maha = PixelScorer("mahalanobis").fit(train_feats, labels=train_semantic)
    maps = maha.score(test_feats, size=(H, W))                      # feature map (B, D, h, w) upsampled

Fitting uses the pixels whose label is not ``ignore_index`` (labels are class indices at the label size, taken
by nearest-neighbour down-sampling to the map size), at most ``max_fit_pixels`` of them chosen at random (seeded).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._checks import as_float, check_finite
from ..detectors import create
from ..detectors.base import Detector
from ..errors import OODLensError

#: pixel scores computed from logits (registered detectors reading the "logits" feature)
LOGIT_SCORES = ("msp", "maxlogit", "entropy", "energy", "gen", "sml")
#: rows scored per block (whole images per block, at least one)
BLOCK_ROWS = 1 << 18


def to_rows(maps: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B·h·w, D): one row per pixel (image-major, then row, then column)."""
    b, d, h, w = maps.shape
    return maps.permute(0, 2, 3, 1).reshape(b * h * w, d)


def _check_map(x: Any, name: str) -> torch.Tensor:
    t = as_float(x, name)
    if t.ndim != 4:
        raise OODLensError(f"{name} must be a (B, D, h, w) map, got shape {tuple(t.shape)}")
    return t


def upsample_scores(scores: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """(B, h, w) score maps resized bilinearly (align_corners=False) to ``size``; unchanged if already that size."""
    if size is None or tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _rows_labels(labels: Any, b: int, h: int, w: int, ignore_index: int) -> torch.Tensor:
    y = torch.as_tensor(labels)
    if y.ndim != 3 or y.shape[0] != b:
        raise OODLensError(f"labels must be (B, H, W) with B={b}, got shape {tuple(y.shape)}")
    if y.is_floating_point():
        raise OODLensError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.long()
    if tuple(y.shape[1:]) != (h, w):  # nearest-neighbour down-sampling of the label map to the feature map
        y = F.interpolate(y[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    return y.reshape(-1)


class PixelScorer:
    """A registered detector (by name, with ``params``, or an instance) applied to every pixel of a map.

    The map is handed to the detector under the one feature name it reads, whatever that name is."""

    def __init__(self, detector: str | Detector, max_fit_pixels: int = 200_000, ignore_index: int = 255,
                 seed: int = 0, **params: Any):
        if isinstance(detector, Detector):
            if params:
                raise OODLensError("pass hyper-parameters to the detector instance, not to PixelScorer")
            self.detector = detector
        else:
            self.detector = create(detector, **params)
        req = self.detector.required_features()
        if len(req) != 1:
            raise OODLensError(f"{type(self.detector).__name__} reads {len(req)} features {req}; a pixel scorer needs "
                               "a detector that reads one map")
        if self.detector.needs_model or self.detector.needs_head:
            raise OODLensError(f"{type(self.detector).__name__} needs the model or the classifier head; pixel "
                               "scoring supports detectors that read one map of features")
        self.feature = req[0]
        self.max_fit_pixels, self.ignore_index, self.seed = int(max_fit_pixels), ignore_index, seed

    @property
    def name(self) -> str:
        return self.detector.name

    def fit(self, maps: Any, labels: Any = None) -> "PixelScorer":
        """Fit the detector on in-distribution pixels of (B, D, h, w) ``maps`` (labels: (B, H, W) class indices,
        ``ignore_index`` excluded; required by detectors that need labels)."""
        x = _check_map(maps, "training maps")
        check_finite(x, "training maps")
        b, d, h, w = x.shape
        rows = to_rows(x)
        y = None
        if labels is not None:
            y = _rows_labels(labels, b, h, w, self.ignore_index)
            keep = (y != self.ignore_index).nonzero().flatten()
        elif self.detector.needs_labels:
            raise OODLensError(f"{type(self.detector).__name__} needs class labels per pixel (labels=(B, H, W))")
        else:
            keep = torch.arange(rows.shape[0])
        if keep.numel() == 0:
            raise OODLensError("no training pixel left after removing the ignore label")
        if keep.numel() > self.max_fit_pixels:
            g = torch.Generator().manual_seed(self.seed)
            keep = keep[torch.randperm(keep.numel(), generator=g)[:self.max_fit_pixels]].sort().values
        self.detector.fit({self.feature: rows[keep]}, labels=None if y is None else y[keep])
        return self

    def score(self, maps: Any, size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, h, w) scores (higher = more anomalous), resized to ``size`` (H, W) when given."""
        x = _check_map(maps, "maps to score")
        b, d, h, w = x.shape
        per = max(1, BLOCK_ROWS // max(1, h * w))  # whole images per block
        out = torch.empty(b, h, w, dtype=torch.float32)
        for i in range(0, b, per):
            out[i:i + per] = self.detector.score({self.feature: to_rows(x[i:i + per])}).view(-1, h, w).float()
        return upsample_scores(out, size)


def logit_scores(logits: Any, methods: tuple[str, ...] = LOGIT_SCORES[:5], size: tuple[int, int] | None = None
                 ) -> dict[str, torch.Tensor]:
    """Fit-free logit scores (MSP, MaxLogit, Entropy, Energy, GEN by default) of (B, C, H, W) logits:
    {name: (B, H, W)}. SML needs training logits: use ``PixelScorer("sml").fit(train_logits)``."""
    x = _check_map(logits, "logits")
    out = {}
    for m in methods:
        if m == "sml":
            raise OODLensError("SML needs in-distribution training logits: PixelScorer('sml').fit(train_logits)")
        out[m] = PixelScorer(m).fit(x[:1]).score(x, size)
    return out
