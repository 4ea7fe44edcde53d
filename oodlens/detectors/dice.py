"""DICE: directed sparsification of the classifier weights (Sun & Li, ECCV 2022, "DICE: Leveraging Sparsification
for Out-of-Distribution Detection"), on penultimate features and the classifier head.

    m̄ = mean of the training features (D,)
    V_{c,j} = m̄_j · W_{c,j}                                   (contribution of unit j to class c, (C, D))
    M_{c,j} = 1[V_{c,j} > the p-th percentile of all C·D entries of V]
    score(x) = − log Σ_c exp(((M ⊙ W) z + b)_c)               (energy with the masked weights, T = 1)

So only the top (100 − p)% contributions are kept. The reference code (deeplearning-wisc/dice, ``RouteDICE``)
computes exactly this mask (strict ``>`` against ``np.percentile`` of the contributions) and returns logsumexp
as an ID score; we return the energy (its negation), so higher = more OOD. Default p = 90, the paper's value
for CIFAR (it uses p = 70 on ImageNet, where DICE is combined with ReAct).
"""

from __future__ import annotations

import numpy as np
import torch

from ._gaussian import mean64
from ._order_stats import Workspace, check_percentile, percentile
from ._shaping import ShapedEnergy
from .base import Head


class DICE(ShapedEnergy):
    name = "dice"
    param_grid = {"p": [10, 30, 50, 70, 90]}
    #: the toy head has only 4×16 weights: keeping 10% of them leaves too little signal
    test_params = {"p": 30}

    def __init__(self, p: float = 90.0, features: str = "features"):
        self.p = p
        self.features = features

    def _fit_shaping(self, z: torch.Tensor) -> None:
        p = check_percentile(self.p, "DICE sparsity p")
        mean = mean64(z)  # float64 row-block sums: no float64 copy of the features
        w = self.head_.weight.to(z.device, torch.float64)
        contrib = mean[None, :] * w
        mask = contrib > percentile(contrib, p)
        self.kept_fraction_ = float(mask.to(torch.float64).mean())
        self.head_ = Head((w * mask).to(self.head_.weight.dtype), self.head_.bias.to(z.device))

    def _shape(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return z, None

    _shapes_values = False

    def _shape_block_cpu(self, a: np.ndarray, out: None, work: Workspace) -> None:
        """Nothing to shape: on the CPU the base class then scores by blocks (head product and energy)."""

    def _shape_block_compiled(self, kernels, a: np.ndarray, out: None) -> None:
        """Nothing to shape: the compiled path's blocked head product and one logsumexp do the work."""
