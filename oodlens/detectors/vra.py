"""VRA: variational rectified activation (Xu, Lian, Liu & Tao, NeurIPS 2023, "VRA: Variational Rectified
Activation for Out-of-distribution Detection"), on penultimate features and the classifier head.

Per feature dimension j, with α_j and β_j the α-th and β-th percentiles of unit j over the training features:

    h_j = 0            if z_j < α_j
        = z_j + γ      if α_j ≤ z_j ≤ β_j
        = β_j          if z_j > β_j
    score(x) = − log Σ_c exp((W h + b)_c)          (energy of the recomputed logits, T = 1)

γ = 0 is VRA; γ > 0 is the paper's VRA+. This follows the reference code (zeroQiaoba/VRA, ``case == 'clip2'``
in ``models/resnet.py``: add γ, zero what falls below α + γ, set what exceeds β + γ to β), with per-dimension
thresholds from ``torch.quantile(train_features, q, dim=0)`` of the training features. The reference returns
logsumexp as an ID score; we return the energy, so higher = more OOD.

Defaults: α = 60th and β = 90th percentile, γ = 0 — the README's VRA command for CIFAR-10 (``--q1 0.6 --q2 0.9``;
CIFAR-100 uses q2 = 0.95; VRA+ uses γ = 0.6). The reference's ImageNet runs instead pass absolute thresholds
(e.g. 0.5 and 1.0 for ResNet-50); VRA++ (an extra norm term) is not implemented. β = 100 caps at the training
maximum (the reference's "no cap" is not expressible as a percentile).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import OODLensError
from ._order_stats import Workspace, check_percentile, clip_rows_compiled, percentile
from ._shaping import ShapedEnergy


class VRA(ShapedEnergy):
    name = "vra"
    param_grid = {"alpha_percentile": [40, 50, 60, 70], "beta_percentile": [85, 90, 95, 99]}

    def __init__(self, alpha_percentile: float = 60.0, beta_percentile: float = 90.0, gamma: float = 0.0,
                 features: str = "features"):
        self.alpha_percentile = alpha_percentile
        self.beta_percentile = beta_percentile
        self.gamma = gamma
        self.features = features

    def _fit_shaping(self, z: torch.Tensor) -> None:
        a = check_percentile(self.alpha_percentile, "VRA alpha_percentile")
        b = check_percentile(self.beta_percentile, "VRA beta_percentile")
        if a > b:
            raise OODLensError(f"VRA needs alpha_percentile <= beta_percentile, got {a} > {b}")
        if not math.isfinite(float(self.gamma)):
            raise OODLensError(f"VRA gamma must be a finite number, got {self.gamma!r}")
        self.lower_ = percentile(z, a, dim=0).to(z.dtype)
        self.upper_ = percentile(z, b, dim=0).to(z.dtype)

    def _shape(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        g = float(self.gamma)
        lower, upper = self.lower_.to(z.dtype), self.upper_.to(z.dtype)
        h = (z + g).masked_fill_(z < lower, 0.0)
        return torch.where(h > upper + g, upper, h), None

    def _shape_block_cpu(self, a: np.ndarray, out: np.ndarray, work: Workspace) -> None:
        """numpy version of ``_shape`` for a block of rows (the same float32 operations)."""
        g = a.dtype.type(self.gamma)
        lower = self.lower_.numpy().astype(a.dtype, copy=False)
        upper = self.upper_.numpy().astype(a.dtype, copy=False)
        keep = np.greater_equal(a, lower, out=work.get("mask", a.shape, bool))
        np.multiply(np.add(a, g, out=out), keep, out=out)  # z + γ, or (±)0 below the lower threshold
        if g == 0:  # values above β become β: a plain minimum
            np.minimum(out, upper, out=out)
        else:
            np.copyto(out, np.broadcast_to(upper, out.shape), where=np.greater(out, upper + g, out=keep))

    def _shape_block_compiled(self, kernels, a: np.ndarray, out: np.ndarray) -> None:
        """Compiled version: the piecewise rectification in one pass (threads over rows), same float operations."""
        clip_rows_compiled(kernels, a, self.lower_.numpy(), self.upper_.numpy(), float(self.gamma), out)
