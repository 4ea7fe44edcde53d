"""LogitNorm (Wei, Xie, Cheng, Feng, An, Li, ICML 2022, "Mitigating Neural Network Overconfidence with Logit
Normalization").

    L = CE( f(x) / (τ · (‖f(x)‖₂ + 1e-7)), y )

Cross-entropy on the logit vector normalised to norm 1/τ, so the loss can no longer fall by inflating ‖f‖.
Default τ = 0.04 (the reference's CIFAR-10 setting; the reference ``LogitNormLoss`` adds 1e-7 to the norm).
The paper scores with MSP on the raw logits, which is this method's own score.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import OODLensError
from .base import CrossEntropy, StepContext, check_numbers


def logitnorm_loss(logits: Tensor, target: Tensor, tau: float = 0.04) -> Tensor:
    """CE on logits / (τ (‖logits‖₂ + 1e-7)), norms over dim 1."""
    norms = logits.norm(p=2, dim=1, keepdim=True) + 1e-7
    return F.cross_entropy(logits / (norms * tau), target)


class LogitNorm(CrossEntropy):
    name = "logitnorm"
    paper = "Wei et al., ICML 2022"
    score = ("msp", {})

    def __init__(self, tau: float = 0.04):
        check_numbers("LogitNorm", floats={"tau": tau})
        if not tau > 0:
            raise OODLensError(f"LogitNorm tau must be > 0, got {tau}")
        self.tau = float(tau)

    def loss(self, ctx: StepContext) -> dict[str, Tensor]:
        total = logitnorm_loss(ctx.logits, ctx.y, self.tau)
        return {"logitnorm": total, "loss": total}
