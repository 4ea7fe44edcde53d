"""SSD: cluster-conditioned Mahalanobis distance on unlabelled features (Sehwag, Chiang & Mittal, ICLR 2021,
"SSD: A Unified Framework for Self-Supervised Outlier Detection"). Needs no labels and no classifier head: it runs
on any encoder's embeddings (self-supervised or foundation-model features).

    z ← z / (‖z‖₂ + 1e-10),   z ← (z − m) / (s + 1e-10)        m, s: per-feature mean and std (ddof 0) of training z
    clusters 1..K by k-means on the training z;  μ_k, Σ_k = mean and ML covariance of cluster k
    score(x) = min_k (z − μ_k)ᵀ Σ_k⁺ (z − μ_k)

Higher = farther from every cluster = more OOD. With ``covariance="empirical"`` this matches the reference
(github.com/inspire-group/SSD, ``eval_ssd.py``; the default ``"auto"`` differs for small clusters, see below): the same normalisation and standardisation, ``np.cov(bias=True)`` per cluster, pseudo-inverse,
minimum over clusters, and ``--clusters`` default 1 (one Gaussian). Differences: k-means is our seeded Lloyd /
k-means++ (``_kmeans.py``; the reference runs faiss k-means for 100 iterations on a random permutation), and the
pseudo-inverse drops eigenvalues below 1e-10 × the largest (numpy's ``pinv`` uses 1e-15).

``normalise=False`` skips the L2 normalisation and standardisation; with ``clusters=1`` that is the one-class
Mahalanobis distance to the training mean (registered as ``mahalanobis_one_class``, a label-free variant of Lee
et al. 2018's class-conditional score).

``covariance`` chooses each cluster's Σ_k⁺ (:func:`._gaussian.fit_whitener`): ``"empirical"`` is the reference's
pseudo-inverse; ``"shrinkage"`` OAS-shrinks Σ_k; ``"auto"`` (default, as the other Gaussian detectors) shrinks a
cluster with fewer than 2·D rows or an ill-conditioned covariance, else it is the pseudo-inverse — so small
k-means clusters do not give degenerate distances.

Statistics by :func:`._gaussian_stats.gaussian_stats` with the clusters as classes (per-class scatters, float64); scoring projects row blocks onto all K whiteners in one product
(``_gaussian.centred_products``) and stores K·D² numbers.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._gaussian import centred_products, check_covariance_choice, fit_whitener
from ._gaussian_stats import gaussian_stats
from ._kmeans import kmeans
from .base import Detector


class SSD(Detector):
    name = "ssd"
    param_grid = {"clusters": [1, 2, 4, 8, 16]}

    def __init__(self, clusters: int = 1, normalise: bool = True, iters: int = 100, seed: int = 0,
                 covariance: str = "auto", features: str = "features"):
        self.clusters = clusters
        self.covariance = check_covariance_choice(covariance)
        self.normalise = normalise
        self.iters = iters
        self.seed = seed
        self.features = features

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    def _prepare(self, z: torch.Tensor) -> torch.Tensor:
        z = as_float(z).to(torch.float64)
        if not self.normalise:
            return z
        z = z / (z.norm(dim=1, keepdim=True) + 1e-10)
        return (z - self.shift_) / (self.scale_ + 1e-10)

    def _fit(self, train, labels, head, model) -> None:
        if isinstance(self.clusters, bool) or not isinstance(self.clusters, int) or self.clusters < 1:
            raise OODLensError(f"SSD clusters must be a positive integer, got {self.clusters!r}")
        raw = as_float(train[self.features]).to(torch.float64)
        if self.clusters > raw.shape[0]:
            raise OODLensError(f"SSD clusters={self.clusters} but only {raw.shape[0]} training rows")
        unit = raw / (raw.norm(dim=1, keepdim=True) + 1e-10)
        self.shift_, self.scale_ = unit.mean(0), unit.std(0, unbiased=False)
        z = self._prepare(raw)
        if self.clusters == 1:
            assign = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        else:
            _, assign = kmeans(z, self.clusters, self.iters, self.seed)
        stats = gaussian_stats(z, assign, self.clusters, per_class=True)
        covs = stats.class_covariances()
        if not float(torch.diagonal(covs, dim1=1, dim2=2).sum()) > 0:
            raise OODLensError("SSD: all training features are identical (zero variance)")
        k, d, _ = covs.shape
        w = torch.zeros(k, d, d, dtype=torch.float64, device=covs.device)
        shrink = []
        for c in range(k):  # K eigendecompositions at fit (K is small); kept directions fill the first columns
            wc, rho = fit_whitener(covs[c], int(stats.counts[c]), self.covariance, f"SSD cluster {c} covariance")
            w[c, :, :wc.shape[1]] = wc
            shrink.append(rho)
        self.shrinkage_ = shrink
        self.whiten_ = w.permute(1, 0, 2).reshape(d, k * d)  # [W_1 | … | W_K]
        self.means_white_ = torch.einsum("kd,kde->ke", stats.means, w)
        self.cluster_sizes_ = stats.counts.long().tolist()

    def _score(self, x) -> torch.Tensor:
        z = self._prepare(x[self.features])
        k, d = self.means_white_.shape
        out = torch.empty(z.shape[0], dtype=torch.float64, device=z.device)
        zero = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)
        for rows, p in centred_products(z, zero, self.whiten_):
            out[rows] = (p.view(-1, k, d) - self.means_white_).pow(2).sum(2).amin(1)
        return out.to(torch.float32)
