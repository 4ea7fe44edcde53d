"""Mahalanobis distance to the closest class (Lee et al., NeurIPS 2018, "A Simple Unified Framework for
Detecting Out-of-Distribution Samples and Adversarial Attacks"), on penultimate features, without input noise.

    μ_c = mean of class c,   Σ = (1/N) Σ_i (z_i − μ_{y_i})(z_i − μ_{y_i})ᵀ   (one covariance shared by all classes)
    score(x) = min_c (z − μ_c)ᵀ Σ⁺ (z − μ_c)

Σ⁺ is the pseudo-inverse (as sklearn's EmpiricalCovariance in the reference code), so a singular covariance
(more dimensions than samples) is handled. All classes are scored in one expansion after whitening:
w = Wᵀz with W Wᵀ = Σ⁺, then ‖w − Wᵀμ_c‖² = ‖w‖² − 2 w·(Wᵀμ_c) + ‖Wᵀμ_c‖².
"""

from __future__ import annotations

import torch

from ._gaussian import class_means, min_sq_distance, tied_covariance, whitener
from .base import Detector


class Mahalanobis(Detector):
    name = "mahalanobis"
    needs_labels = True

    def __init__(self, features: str = "features"):
        self.features = features

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    def _fit(self, train, labels, head, model) -> None:
        z = train[self.features]
        means, _ = class_means(z, labels)
        cov = tied_covariance(z, labels, means)
        self.center_ = means.mean(0)
        w = whitener(cov)
        self.whiten_ = w.to(torch.float32)
        self.means_white_ = ((means - self.center_) @ w).to(torch.float32)

    def _score(self, x) -> torch.Tensor:
        return min_sq_distance(x[self.features], self.center_, self.whiten_, self.means_white_)
