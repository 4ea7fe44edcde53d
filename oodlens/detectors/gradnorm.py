"""GradNorm (Huang, Geng, Li — NeurIPS 2021, "On the Importance of Gradients for Detecting Distributional Shifts
in the Wild").

GradNorm is the L1 norm of the gradient, w.r.t. the last layer's weight W (C, D), of the cross-entropy between
the uniform distribution and softmax(f/T). The reference code (deeplearning-wisc/gradnorm_ood; OpenOOD's
``GradNormPostprocessor`` likewise) uses all-ones targets, L = Σ_c −log softmax(f/T)_c (= C·KL(u ‖ softmax(f/T))
up to a constant), one input at a time, and the weight gradient only (no bias). With f = W h + b that gradient
has the closed form ∂L/∂W = (C·softmax(f/T) − 1)/T ⊗ h, whose entry-wise L1 norm factorises:

    p = softmax(f(x) / T),   GradNorm(x) = (1/T) · Σ_c |C p_c − 1| · Σ_d |h_d|
    score(x) = − GradNorm(x)

The paper's GradNorm is higher for ID inputs, so it is negated (higher = more OOD). Default T = 1 as in the
reference code (``--temperature_gradnorm 1``). The closed form gives exactly the reference's autograd value
(same C/T scaling) for a whole batch at once.

Reads the penultimate ``features`` h (N, D) and the ``logits`` f (N, C); no head is needed, but the logits must be
the head applied to these features (the method assumes f = W h + b).
"""

from __future__ import annotations

import math
import numbers

import torch

from .._checks import as_float
from ..errors import OODLensError
from .base import Detector


class GradNorm(Detector):
    name = "gradnorm"
    param_grid = {"temperature": [0.5, 1.0, 2.0, 5.0, 10.0]}
    score_only_params = frozenset({"temperature"})

    def __init__(self, temperature: float = 1.0, features: str = "features", logits: str = "logits"):
        self.temperature = temperature
        self.features = features
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.features, self.logits)

    def _check_params(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t < math.inf:
            raise OODLensError(f"GradNorm temperature must be a finite number > 0, got {t!r}")

    def _fit(self, train, labels, head, model) -> None:
        self._check_params()

    def _score(self, x) -> torch.Tensor:
        self._check_params()
        t = float(self.temperature)
        f = as_float(x[self.logits])
        p = torch.softmax(f / t, dim=1)
        logit_grad_l1 = (f.shape[1] * p - 1).abs().sum(1) / t
        return -(logit_grad_l1 * as_float(x[self.features]).abs().sum(1))
