"""Mixture Outlier Exposure, MixOE (Zhang, Inkawhich, Linderman, Chen, Li, WACV 2023, "Mixture Outlier Exposure:
Towards Out-of-Distribution Detection in Fine-grained Environments").

Each step mixes the ID batch with an outlier batch, λ ~ Beta(α, α) (one λ per step):

    mixup:   x̃ = λ x + (1 − λ) x'
    cutmix:  x̃ = x with a box of x' pasted in, λ reset to the share of x left
    ỹ = λ · onehot(y) + (1 − λ) · u,   u = uniform over the C classes
    L = CE(f(x), y) + β · E[ −Σ_c ỹ_c log softmax(f(x̃))_c ]

Reference defaults (its train.sh): mixup α = 1, cutmix α = 2, β = 5. The paper scores with MSP.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import OODLensError
from .base import CrossEntropy, StepContext, check_numbers

MIX_OPS = ("mixup", "cutmix")


def soft_cross_entropy(logits: Tensor, soft_targets: Tensor) -> Tensor:
    """Mean over rows of −Σ_c t_c log softmax(logits)_c."""
    return -(soft_targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def mixed_targets(y: Tensor, num_classes: int, lam: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """λ · onehot(y) + (1 − λ) / C."""
    return lam * F.one_hot(y, num_classes).to(dtype) + (1.0 - lam) / num_classes


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Box (y1, y2, x1, x2) of side √(1−λ)·size around a uniform centre, clipped to the image."""
    rat = math.sqrt(1.0 - lam)
    ch, cw = int(height * rat), int(width * rat)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    return (max(cy - ch // 2, 0), min(cy + ch // 2, height), max(cx - cw // 2, 0), min(cx + cw // 2, width))


def mix_inputs(x: Tensor, x_out: Tensor, lam: float, op: str, rng: np.random.Generator) -> tuple[Tensor, float]:
    """Mixed inputs and the λ that the soft targets use (for cutmix: the share of pixels left from ``x``)."""
    if x_out.shape != x.shape:
        raise OODLensError(f"MixOE needs outlier inputs shaped like the ID batch, got {tuple(x_out.shape)} vs {tuple(x.shape)}")
    if op == "mixup":
        return lam * x + (1.0 - lam) * x_out, lam
    if x.ndim < 3:
        raise OODLensError("cutmix needs image-like inputs (N, C, H, W)")
    h, w = x.shape[-2], x.shape[-1]
    y1, y2, x1, x2 = cutmix_box(h, w, lam, rng)
    mixed = x.clone()
    mixed[..., y1:y2, x1:x2] = x_out[..., y1:y2, x1:x2]
    return mixed, 1.0 - (y2 - y1) * (x2 - x1) / (h * w)


class MixtureOutlierExposure(CrossEntropy):
    name = "moe"
    paper = "Zhang et al., WACV 2023"
    needs_outliers = True
    concat_outliers = False  # the reference forwards the ID batch and the mixed batch separately
    score = ("msp", {})

    def __init__(self, mix_op: str = "mixup", alpha: float | None = None, weight: float = 5.0):
        if mix_op not in MIX_OPS:
            raise OODLensError(f"mix_op must be one of {MIX_OPS}, got {mix_op!r}")
        check_numbers("MixOE", floats={"weight": weight, **({"alpha": alpha} if alpha is not None else {})})
        self.mix_op = mix_op
        self.alpha = float(alpha if alpha is not None else (1.0 if mix_op == "mixup" else 2.0))
        if not self.alpha > 0 or weight < 0:
            raise OODLensError(f"MixOE needs alpha > 0 and weight >= 0, got {self.alpha}, {weight}")
        self.weight = float(weight)
        self._num_classes = 0

    def setup(self, model, head_name, num_classes, feature_dim) -> None:
        self._num_classes = int(num_classes)

    def loss(self, ctx: StepContext) -> dict[str, Tensor]:
        assert ctx.outlier_inputs is not None
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator)))
        lam = float(rng.beta(self.alpha, self.alpha))
        x_out = ctx.outlier_inputs[: ctx.x.shape[0]]
        mixed, lam = mix_inputs(ctx.x, x_out, lam, self.mix_op, rng)
        _, mixed_logits = ctx.forward(mixed)
        ce = F.cross_entropy(ctx.logits, ctx.y)
        mix = soft_cross_entropy(mixed_logits, mixed_targets(ctx.y, self._num_classes, lam, mixed_logits.dtype))
        return {"ce": ce, "mixed": mix, "loss": ce + self.weight * mix}
