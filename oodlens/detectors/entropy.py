"""Predictive entropy of the softmax: the standard Shannon-entropy uncertainty baseline (no single originating
paper; it is the natural companion of the max-softmax baseline of Hendrycks & Gimpel, ICLR 2017).

    p = softmax(f(x)),   score(x) = H(p) = − Σ_c p_c log p_c

Higher entropy = flatter prediction = more OOD, so no sign change is needed. It is computed from the
log-softmax (H = − Σ_c p_c · log_softmax(f)_c), so probabilities that underflow to zero contribute exactly 0
and very large logits stay finite. No hyper-parameters and no fitting.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ._logit_only import LogitOnlyDetector


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) per row, (N,), computed from the log-softmax (0·log 0 counts as 0)."""
    logp = torch.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1)


class Entropy(LogitOnlyDetector):
    name = "entropy"

    def _score(self, x) -> torch.Tensor:
        return softmax_entropy(as_float(x[self.logits]))
