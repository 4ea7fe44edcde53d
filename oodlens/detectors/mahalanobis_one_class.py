"""One-class Mahalanobis distance: the squared Mahalanobis distance to the mean of all training features, one
Gaussian for the whole in-distribution — the label-free variant of Lee et al. (NeurIPS 2018) used on
self-supervised and foundation-model embeddings (it is SSD with one cluster and no normalisation; Sehwag et al.,
ICLR 2021):

    μ = mean of training z,   Σ = (1/N) Σ_i (z_i − μ)(z_i − μ)ᵀ
    score(x) = (z − μ)ᵀ Σ⁺ (z − μ)

Needs no labels and no head. Implemented as :class:`~oodlens.detectors.ssd.SSD` (``clusters=1``,
``normalise=False``); hyper-parameters: the feature name and ``covariance`` (pseudo-inverse, OAS shrinkage or
``"auto"``, see :mod:`oodlens.detectors.ssd`).
"""

from __future__ import annotations

from .ssd import SSD


class MahalanobisOneClass(SSD):
    name = "mahalanobis_one_class"
    param_grid: dict = {}

    def __init__(self, features: str = "features", covariance: str = "auto"):
        super().__init__(clusters=1, normalise=False, covariance=covariance, features=features)
