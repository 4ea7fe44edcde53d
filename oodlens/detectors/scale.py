"""SCALE (Xu, Chen, Franchi & Yao, ICLR 2024, "Scaling for Training Time and Post-hoc Out-of-distribution
Detection Enhancement"), on penultimate features and the classifier head.

Per sample, over all n activations a, with k = n − round(n·p/100), s1 = Σ_i a_i and s2 = the sum of the k
largest activations:

    r = s1 / s2,      h = a · e^{r}                  (every activation kept: scaling without pruning)
    score(x) = − log Σ_c exp((W pool(h) + b)_c)     (energy, T = 1)

This is the reference code (kai422/SCALE, ``scale()`` in ``openood/networks/scale_net.py``: ASH-S's s1/s2 but
applied to the unpruned input), which returns logsumexp as an ID score; we return the energy, so higher = more
OOD. The reference applies it to the pooled penultimate features (default here); a spatial map (N, C, *spatial)
is also accepted: r is taken over all its entries, and the scaled map is average-pooled before the head.
Default p = 85, the reference's ``configs/postprocessors/scale.yml``. On the CPU, s1 and s2 come from the compiled
counting selection of :mod:`._select` (no shaped copy: the logits are the plain head product of the features,
times e^{r} in float64 in the energy).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._order_stats import (Workspace, keep_count, sharpening_factor, top_k_rows_compiled, top_k_threshold_sum,
                           top_k_threshold_sum_np)
from ._shaping import ShapedEnergy


class SCALE(ShapedEnergy):
    name = "scale"
    spatial_inputs = True
    param_grid = {"percentile": [50, 60, 65, 70, 75, 80, 85, 90, 95, 99]}
    score_only_params = frozenset({"percentile"})

    def __init__(self, percentile: float = 85.0, features: str = "features"):
        self.percentile = percentile
        self.features = features

    def _fit_shaping(self, z: torch.Tensor) -> None:
        keep_count(math.prod(z.shape[1:]), self.percentile, "SCALE")

    def _shape(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = z.flatten(1)
        _, s2 = top_k_threshold_sum(flat, keep_count(flat.shape[1], self.percentile, "SCALE"))
        return z, sharpening_factor(flat.sum(1, dtype=torch.float64), s2, "SCALE")

    _shapes_values = False  # the CPU kernel only computes the factor; the features enter the head unchanged

    def _shape_block_cpu(self, a: np.ndarray, out: None, work: Workspace) -> np.ndarray:
        """numpy version of ``_shape`` for a block of flattened rows: the factor e^{s1/s2}."""
        _, s2, _ = top_k_threshold_sum_np(a, keep_count(a.shape[1], self.percentile, "SCALE"), work)
        return sharpening_factor(torch.from_numpy(a.sum(1, dtype=np.float64)), torch.from_numpy(s2), "SCALE").numpy()

    def _shape_block_compiled(self, kernels, a: np.ndarray, out: None) -> np.ndarray:
        """Compiled version: s1 and the top-k sum s2 of each row from the counting selection, then e^{s1/s2}."""
        s1, s2, _, _ = top_k_rows_compiled(kernels, a, keep_count(a.shape[1], self.percentile, "SCALE"),
                                           kernels.STATS, None)
        return sharpening_factor(torch.from_numpy(s1), torch.from_numpy(s2), "SCALE").numpy()
