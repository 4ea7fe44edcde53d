"""Residual score: the baseline of Wang et al., CVPR 2022, "ViM: Out-Of-Distribution with Virtual-logit
Matching" (Sec. 3), on penultimate features.

    u = −W⁺ b                                    (origin from the classifier head: weight W (C, D), bias b (C,))
    R = eigenvectors of (1/N) Σ_i (z_i − u)(z_i − u)ᵀ beyond the top ``dim``   (training features)
    score(x) = ‖(z − u) R‖₂

The reference code (haoqiwang/vim ``benchmark.py``; OpenOOD's ``ResidualPostprocessor``) returns the negated norm
as an in-distribution confidence; we return the norm itself, so higher = more OOD.

Defaults: ``dim=None`` applies the ViM paper's rule — 1000 if D ≥ 2048, 512 if D ≥ 768, else D // 2 (OpenOOD uses
256 for its 512-d CIFAR ResNet-18, the same rule). The principal subspace is estimated on the training features
(as in the ViM repository; OpenOOD's Residual postprocessor estimates it on its ID validation split instead).
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._gaussian_stats import mark_fitted
from ._principal import (PrincipalStats, head_origin, principal_stats, residual_basis_from, residual_norm,
                         resolve_principal_dim)
from .base import Detector, Head


class Residual(Detector):
    name = "residual"
    needs_head = True
    param_grid = {"dim": [None, 8, 16, 32, 64, 128, 256, 512, 1000]}

    def __init__(self, dim: int | None = None, features: str = "features"):
        self.dim = dim
        self.features = features

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    def _fit(self, train, labels, head, model) -> None:
        z = as_float(train[self.features])
        self.fit_from_stats(principal_stats(z, head_origin(head, z.shape[1])), head)

    def fit_from_stats(self, stats: PrincipalStats, head) -> "Residual":
        """Fit from the statistics about the head's origin (merged across shards by ``oodlens.scale``; ``fit``
        passes those of all rows, so both paths share this code)."""
        head = Head.coerce(head)
        self.dim_ = resolve_principal_dim(self.dim, stats.dim)
        self.origin_ = head_origin(head, stats.dim).to(stats.moment.device)
        if not torch.allclose(self.origin_, stats.origin.to(self.origin_), rtol=1e-12, atol=0):
            raise OODLensError("principal statistics were taken about another origin than this head's −W⁺b")
        self.basis_ = residual_basis_from(stats, self.dim_)
        mark_fitted(self, stats.dim)
        return self

    def _score(self, x) -> torch.Tensor:
        return residual_norm(as_float(x[self.features]), self.origin_, self.basis_)
