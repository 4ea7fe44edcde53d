"""ReAct: rectified activations (Sun, Guo & Li, NeurIPS 2021, "ReAct: Out-of-distribution Detection With Rectified
Activations"), on penultimate features and the classifier head.

    c = the p-th percentile of all training activations (every entry of the (N, D) training features)
    h = min(z, c)                                  (element-wise clipping)
    score(x) = − log Σ_c exp((W h + b)_c)           (energy of the recomputed logits, T = 1)

The reference code (deeplearning-wisc/react) returns the free energy's negation, logsumexp, as an ID score; we
return the energy itself, so higher = more OOD. Default p = 90, the reference's percentile
(``compute_threshold.py`` takes ``np.percentile(activations.flatten(), 90)``). Difference: the reference
estimates c on a few thousand ID images from the validation split; here c comes from the features given to
``fit`` (ID training data), as OpenOOD does.
"""

from __future__ import annotations

import numpy as np
import torch

from ._order_stats import Workspace, check_percentile, clip_rows_compiled, percentile
from ._shaping import ShapedEnergy


class ReAct(ShapedEnergy):
    name = "react"
    param_grid = {"percentile": [80, 85, 90, 95, 99]}

    def __init__(self, percentile: float = 90.0, features: str = "features"):
        self.percentile = percentile
        self.features = features

    def _fit_shaping(self, z: torch.Tensor) -> None:
        p = check_percentile(self.percentile, "ReAct percentile")
        self.threshold_ = float(percentile(z, p))

    def _shape(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return z.clamp(max=self.threshold_), None

    def _shape_block_cpu(self, a: np.ndarray, out: np.ndarray, work: Workspace) -> None:
        """numpy version of ``_shape`` for a block of rows."""
        np.minimum(a, a.dtype.type(self.threshold_), out=out)

    def _shape_block_compiled(self, kernels, a: np.ndarray, out: np.ndarray) -> None:
        """Compiled version: min(a, c) in one pass (threads over rows)."""
        clip_rows_compiled(kernels, a, None, np.full(a.shape[1], self.threshold_, dtype=a.dtype), 0.0, out)
