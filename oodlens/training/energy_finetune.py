"""Energy-bounded learning (Liu, Wang, Owens, Li, NeurIPS 2020, "Energy-based Out-of-distribution Detection").

With E(x) = −log Σ_c exp f_c(x):

    L = CE(f(x), y) + λ · ( E_in[ max(0, E(x) − m_in)² ] + E_out[ max(0, m_out − E(x'))² ] )

a squared hinge pulling ID energies below m_in and outlier energies above m_out. Reference defaults (CIFAR-10):
λ = 0.1, m_in = −25, m_out = −7 (CIFAR-100: −27 / −5); ID and outliers share one forward pass. Scored by the
energy, as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import OODLensError
from .base import CrossEntropy, StepContext, check_numbers


def energy_margin_loss(in_logits: Tensor, out_logits: Tensor, m_in: float = -25.0, m_out: float = -7.0) -> Tensor:
    """mean(relu(E_in − m_in)²) + mean(relu(m_out − E_out)²), E = −logsumexp over dim 1."""
    e_in = -torch.logsumexp(in_logits, dim=1)
    e_out = -torch.logsumexp(out_logits, dim=1)
    return F.relu(e_in - m_in).pow(2).mean() + F.relu(m_out - e_out).pow(2).mean()


class EnergyFinetune(CrossEntropy):
    name = "energy_ft"
    paper = "Liu et al., NeurIPS 2020"
    needs_outliers = True
    score = ("energy", {})

    def __init__(self, weight: float = 0.1, m_in: float = -25.0, m_out: float = -7.0):
        check_numbers("EnergyFinetune", floats={"weight": weight, "m_in": m_in, "m_out": m_out})
        if weight < 0:
            raise OODLensError(f"EnergyFinetune weight must be >= 0, got {weight}")
        if not m_in < m_out:
            raise OODLensError(f"EnergyFinetune needs m_in < m_out, got {m_in}, {m_out}")
        self.weight, self.m_in, self.m_out = float(weight), float(m_in), float(m_out)

    def loss(self, ctx: StepContext) -> dict[str, Tensor]:
        assert ctx.outlier_logits is not None
        ce = F.cross_entropy(ctx.logits, ctx.y)
        reg = energy_margin_loss(ctx.logits, ctx.outlier_logits, self.m_in, self.m_out)
        return {"ce": ce, "energy_margin": reg, "loss": ce + self.weight * reg}
