"""Mahalanobis distance to the closest class (Lee et al., NeurIPS 2018, "A Simple Unified Framework for
Detecting Out-of-Distribution Samples and Adversarial Attacks"), on penultimate features, without input noise.

    μ_c = mean of class c,   Σ = (1/N) Σ_i (z_i − μ_{y_i})(z_i − μ_{y_i})ᵀ   (one covariance shared by all classes)
    score(x) = min_c (z − μ_c)ᵀ Σ⁺ (z − μ_c)

``covariance`` chooses Σ⁺ (``_gaussian.fit_whitener``): ``"empirical"`` is the pseudo-inverse of the ML estimate (as
sklearn's EmpiricalCovariance in the reference code); ``"shrinkage"`` inverts the OAS shrinkage estimate
(1 − ρ)Σ + ρ(tr Σ/D)I (sklearn's ``OAS``), full rank; ``"auto"`` (default) uses shrinkage only when N < 2·D or Σ is
ill-conditioned (λ_min < 1e-6·λ_max) — with fewer samples than dimensions the pseudo-inverse ignores every direction
outside the training span, so an input that differs only there would score as ID. All classes are scored in one expansion after whitening:
w = Wᵀz with W Wᵀ = Σ⁺, then ‖w − Wᵀμ_c‖² = ‖w‖² − 2 w·(Wᵀμ_c) + ‖Wᵀμ_c‖².
"""

from __future__ import annotations

import torch

from ._gaussian import fit_whitener, min_sq_distance
from ._gaussian_stats import GaussianStats, mark_fitted
from ._gaussian_family import TiedGaussianDetector


class Mahalanobis(TiedGaussianDetector):
    name = "mahalanobis"

    def fit_from_stats(self, stats: GaussianStats, head=None) -> "Mahalanobis":
        """Fit from sufficient statistics (merged across shards by ``oodlens.scale``; ``fit`` passes those of all
        rows, so both paths share this code)."""
        means, _ = stats.class_means()
        cov = stats.tied_covariance()
        mark_fitted(self, stats.dim)
        self.center_ = means.mean(0)
        w, self.shrinkage_ = fit_whitener(cov, stats.n, self.covariance)
        self.whiten_ = w.to(torch.float32)
        self.means_white_ = ((means - self.center_) @ w).to(torch.float32)
        return self

    def _score(self, x) -> torch.Tensor:
        return min_sq_distance(x[self.features], self.center_, self.whiten_, self.means_white_)
