"""Outlier Exposure (Hendrycks, Mazeika, Dietterich, ICLR 2019, "Deep Anomaly Detection with Outlier Exposure").

    L = CE(f(x), y) + λ · E_{x' ~ outliers} [ −(1/C) Σ_c log softmax(f(x'))_c ]

i.e. cross-entropy from the uniform distribution to the softmax on auxiliary outliers, which equals
logsumexp(f(x')) − mean_c f_c(x'). λ = 0.5 as in the reference; ID and outlier batches share one forward pass
(as the reference concatenates them). Scored with MSP, as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import OODLensError
from .base import CrossEntropy, StepContext, check_numbers


def uniform_cross_entropy(logits: Tensor) -> Tensor:
    """Mean over rows of −(1/C) Σ_c log softmax(logits)_c = logsumexp(logits) − mean(logits)."""
    return (torch.logsumexp(logits, dim=1) - logits.mean(dim=1)).mean()


class OutlierExposure(CrossEntropy):
    name = "oe"
    paper = "Hendrycks et al., ICLR 2019"
    needs_outliers = True
    score = ("msp", {})

    def __init__(self, weight: float = 0.5):
        check_numbers("OutlierExposure", floats={"weight": weight})
        if weight < 0:
            raise OODLensError(f"OutlierExposure weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def loss(self, ctx: StepContext) -> dict[str, Tensor]:
        assert ctx.outlier_logits is not None
        ce = F.cross_entropy(ctx.logits, ctx.y)
        oe = uniform_cross_entropy(ctx.outlier_logits)
        return {"ce": ce, "oe": oe, "loss": ce + self.weight * oe}
