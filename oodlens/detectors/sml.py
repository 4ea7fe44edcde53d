"""Standardized Max Logits (Jung, Lee, Gwak, Choi, Choo — ICCV 2021, "Standardized Max Logits: A Simple yet
Effective Approach for Identifying Unexpected Road Obstacles in Urban-Scene Segmentation").

    ĉ = argmax_c f_c(x),   L = max_c f_c(x),   score(x) = − (L − μ_ĉ) / σ_ĉ

μ_c, σ_c: mean and standard deviation (population, ddof 0) of the max logit over in-distribution training rows
(pixels) *predicted* as class c. A class that no training row is predicted as gets the statistics of all rows.
A row is one pixel's logits, so this applies to any (N, C) logits; :class:`~oodlens.segmentation.PixelScorer`
feeds it the pixels of a segmentation network. The paper's boundary suppression and dilated smoothing
post-processing are not applied (they act on the map, not on the standardisation).
"""

from __future__ import annotations

import torch

from .._checks import as_float
from .base import Detector
from ..errors import OODLensError


class SML(Detector):
    name = "sml"

    def __init__(self, logits: str = "logits", min_std: float = 1e-6):
        self.logits = logits
        self.min_std = min_std

    def required_features(self) -> tuple[str, ...]:
        return (self.logits,)

    def _fit(self, train, labels, head, model) -> None:
        if not self.min_std > 0:
            raise OODLensError(f"SML min_std must be > 0, got {self.min_std}")
        f = as_float(train[self.logits]).double()
        mx, pred = f.max(1)
        c = f.shape[1]
        count = torch.bincount(pred, minlength=c).double()
        total = torch.bincount(pred, weights=mx, minlength=c)
        mean = torch.where(count > 0, total / count.clamp_min(1), mx.mean())
        sq = torch.bincount(pred, weights=(mx - mean[pred]) ** 2, minlength=c)
        var = torch.where(count > 0, sq / count.clamp_min(1), mx.var(unbiased=False))
        self.mean_ = mean.float()
        self.std_ = var.sqrt().clamp_min(self.min_std).float()
        self.count_ = count

    def _score(self, x) -> torch.Tensor:
        f = as_float(x[self.logits])
        mx, pred = f.max(1)
        return -(mx - self.mean_.to(f.dtype)[pred]) / self.std_.to(f.dtype)[pred]
