"""What the tied-covariance Gaussian detectors (Mahalanobis, RMDS) share: their parameters, the features they
read, and a fit that goes through their own ``fit_from_stats`` (the code ``oodlens.scale`` runs on statistics
merged across shards)."""

from __future__ import annotations

from .._checks import as_float
from ._gaussian import check_covariance_choice
from ._gaussian_stats import gaussian_stats
from .base import Detector


class TiedGaussianDetector(Detector):
    """Base of detectors fitted from class-conditional Gaussians with one shared covariance; subclasses implement
    ``fit_from_stats(stats, head=None)`` and ``_score``."""

    needs_labels = True

    def __init__(self, features: str = "features", covariance: str = "auto"):
        self.features = features
        self.covariance = check_covariance_choice(covariance)

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    def _fit(self, train, labels, head, model) -> None:
        self.fit_from_stats(gaussian_stats(as_float(train[self.features]), labels))
