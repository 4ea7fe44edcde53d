"""GEN, generalized entropy (Liu, Lochman, Zach — CVPR 2023, "GEN: Pushing the Limits of Softmax-Based
Out-of-Distribution Detection").

    p = softmax(f(x)),   p_(1) ≥ p_(2) ≥ … the sorted probabilities,   M' = min(M, C)
    score(x) = G_γ(p) = Σ_{j=1..M'} p_(j)^γ · (1 − p_(j))^γ

The paper's confidence is −G_γ (higher = more ID); its negation G_γ is returned, so higher = more OOD.
Defaults γ = 0.1, M = 100 (capped at the number of classes C) as in the paper and the reference code
(OpenOOD ``GENPostprocessor``, which sorts the softmax and keeps its M largest entries); ``param_grid`` follows
the spirit of OpenOOD's sweep (γ ∈ {0.01, 0.1, 0.5, 1, 2, 5, 10}, M ∈ {10, 50, 100, 200, 500, 1000}) trimmed to
values that differ on typical class counts.

Numerics (same formula, computed more exactly than the reference's float32 ``p**γ * (1-p)**γ``): every term is
``exp(γ·(log p + log(1 − p)))`` from the log-softmax, with ``log(1 − p) = log1p(−p)`` for all but the top class
(p ≤ ½ there) and, for the top class, ``log(1 − p_max) = logsumexp_{j ≠ argmax} f_j − logsumexp_j f_j``. So a
confident prediction whose ``1 − p_max`` is below float precision still gets its (small, non-zero) term instead
of exactly 0, and huge logits stay finite.
"""

from __future__ import annotations

import numbers

import torch

from .._checks import as_float
from ..errors import OODLensError
from .base import Detector
from .temp_scaled_msp import log1m_max_softmax


def generalized_entropy(logits: torch.Tensor, gamma: float, m: int) -> torch.Tensor:
    """Σ over the ``m`` largest softmax probabilities of p^γ (1 − p)^γ, per row (N,)."""
    logp = torch.log_softmax(logits, dim=1)
    top, _ = logp.topk(min(m, logits.shape[1]), dim=1)  # descending: column 0 is the predicted class
    # log(1 − p_max) without forming 1 − p_max (log-sum-exp of the other classes); log1p(−p) for the rest
    log1m = torch.cat([log1m_max_softmax(logits)[:, None], torch.log1p(-top[:, 1:].exp())], dim=1)
    return torch.exp(gamma * (top + log1m)).sum(1)


class GEN(Detector):
    name = "gen"
    param_grid = {"gamma": [0.01, 0.05, 0.1, 0.5, 1.0], "M": [5, 10, 50, 100, 1000]}
    score_only_params = frozenset({"gamma", "M"})

    def __init__(self, gamma: float = 0.1, M: int = 100, logits: str = "logits"):
        self.gamma = gamma
        self.M = M
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.logits,)

    def _check_params(self) -> None:
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, numbers.Real) or not 0 < self.gamma < float("inf"):
            raise OODLensError(f"GEN gamma must be > 0, got {self.gamma}")
        if isinstance(self.M, bool) or not isinstance(self.M, numbers.Real) or int(self.M) != self.M or self.M < 1:
            raise OODLensError(f"GEN M (number of top probabilities) must be an integer >= 1, got {self.M!r}")

    def _fit(self, train, labels, head, model) -> None:
        self._check_params()

    def _score(self, x) -> torch.Tensor:
        self._check_params()
        return generalized_entropy(as_float(x[self.logits]), float(self.gamma), int(self.M))
