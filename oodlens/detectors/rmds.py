"""Relative Mahalanobis distance, RMDS (Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, 2021, "A Simple Fix to
Mahalanobis Distance for Improving Near-OOD Detection", arXiv:2106.09022), on penultimate features.

    μ_c, Σ  = class means and the shared (tied) class covariance          (as in Mahalanobis)
    μ_0, Σ_0 = mean and covariance of all training features, ignoring labels (the "background" Gaussian)
    MD_c(z) = (z − μ_c)ᵀ Σ⁺ (z − μ_c),   MD_0(z) = (z − μ_0)ᵀ Σ_0⁺ (z − μ_0)
    score(x) = min_c [MD_c(z) − MD_0(z)] = min_c MD_c(z) − MD_0(z)

The paper's confidence is −min_c RMD_c; OpenOOD's ``RMDSPostprocessor`` computes max_c [−MD_c + MD_0]. The two
readings of the brief (min over the differences, or the class minimum minus the background) coincide because MD_0
does not depend on c; we return the negated confidence, so higher = more OOD.

Both covariances are maximum-likelihood estimates (divided by N) inverted with the pseudo-inverse, as sklearn's
``EmpiricalCovariance`` in the reference (``covariance="empirical"``), or shrunk first (OAS, ``"shrinkage"``); the
default ``"auto"`` shrinks only when N < 2·D or a covariance is ill-conditioned (see ``mahalanobis.py`` and
``_gaussian.fit_whitener``). All class distances come from one matrix expansion in whitened coordinates. No
hyper-parameters besides the feature name.

Scoring runs over row blocks (``_gaussian.centred_products``): each block is centred on μ_0 and projected on both
whiteners at once, [W | W_0], in reused buffers, so memory stays a small fraction of the input.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ._gaussian import centred_products, fit_whitener, sq_dist_to_means
from ._gaussian_stats import GaussianStats, mark_fitted
from ._gaussian_family import TiedGaussianDetector


class RMDS(TiedGaussianDetector):
    name = "rmds"

    def fit_from_stats(self, stats: GaussianStats, head=None) -> "RMDS":
        """Fit from sufficient statistics (merged across shards by ``oodlens.scale``; ``fit`` passes those of all
        rows). The background Gaussian comes from the same statistics (within + between scatter)."""
        means, _ = stats.class_means()
        w, self.shrinkage_ = fit_whitener(stats.tied_covariance(), stats.n, self.covariance)
        mu0, cov0 = stats.covariance()
        mark_fitted(self, stats.dim)
        # every distance is evaluated on z − μ_0 (centring first keeps the expansion accurate at large norms)
        self.center_ = mu0
        self.whiten_ = w
        self.means_white_ = (means - mu0) @ w
        self.whiten_bg_, self.shrinkage_bg_ = fit_whitener(cov0, stats.n, self.covariance, "background covariance")
        return self

    def _score(self, x) -> torch.Tensor:
        z = as_float(x[self.features])
        r = self.whiten_.shape[1]
        means = self.means_white_.to(z.dtype)
        out = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
        for rows, p in centred_products(z, self.center_, torch.cat([self.whiten_, self.whiten_bg_], 1)):
            # p = (z − μ_0) [W | W_0]: the class distances from the first r columns, MD_0 from the others
            out[rows] = sq_dist_to_means(p[:, :r], means).amin(1).sub_(p[:, r:].square().sum(1))
        return out
