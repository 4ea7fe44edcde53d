"""Class-conditional Gaussian mixture density (Gaussian discriminant analysis) on penultimate features: the
negative log-likelihood of the feature under one Gaussian per class, weighted by the class frequencies.

    π_c = N_c / N,   μ_c = class mean,   Σ_c = class covariance (``"per_class"``) or the shared within-class
    covariance Σ (``"tied"``, the same estimate as Mahalanobis), plus a ridge ε·s·I (see below)
    score(x) = −log Σ_c π_c N(z; μ_c, Σ_c)
             = −logsumexp_c [ log π_c − ½ (r_c log 2π + log|Σ_c|₊ + (z − μ_c)ᵀ Σ_c⁺ (z − μ_c)) ]

Higher = lower density = more OOD. Lineage: the class-conditional Gaussian view of softmax classifiers of Lee et
al. (NeurIPS 2018, "A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial
Attacks"), scored as a full mixture density as OpenOOD's ``GMMPostprocessor`` does. Deliberate differences from
OpenOOD's GMM: the components are the classes (means and weights from the labels), not clusters found by EM on
unlabelled features, and no feature-reduction step; its score Σ_k π_k exp(−½ MD_k) drops the normalising
constants, which only matters for ``"per_class"`` (with ``"tied"`` they are one constant shift of our score).

Singular covariances (more dimensions than samples in a class, a class with one sample): a ridge ε·s·I is added to
every covariance, with s = tr(Σ_total)/D the mean per-feature variance of all training features, so the ridge is
scale-free (sklearn's ``GaussianMixture`` adds ``reg_covar = 1e-6`` in absolute units; we use the same default
ε = 1e-6, relative). A class with one sample thus gets the isotropic Gaussian N(μ_c, ε·s·I). With ``reg_covar=0``
the covariances are inverted with the pseudo-inverse and |Σ_c|₊ is the pseudo-determinant (product of the
eigenvalues above 1e-10 × the largest) with r_c the rank, i.e. the Gaussian restricted to the span of its
covariance; a class whose covariance is zero then has no density and raises.

Computation: statistics and eigendecompositions in float64 (per-class covariances by one batched product over
zero-padded class segments, no loop over classes); scoring whitens z − μ_total and evaluates every class in one
batched expansion, over row blocks in reused buffers (``_gaussian.centred_products``; blocks of ``SCORE_BLOCK``
numbers for ``"tied"``, ``_PER_CLASS_BLOCK`` for ``"per_class"``), so memory stays a small fraction of the input.
``"per_class"`` stores C·D² numbers.
"""

from __future__ import annotations

import math

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._gaussian import centred_products, per_class_covariances, sq_dist_to_means  # noqa: F401  (re-exported)
from ._gaussian_stats import GaussianStats, gaussian_stats, mark_fitted
from .base import Detector

#: numbers per row-block projection when scoring per-class covariances (its width is C·D: larger blocks than the
#: tied case, so each pass over the C·D² whiteners serves more rows)
_PER_CLASS_BLOCK = 1 << 22
_RCOND = 1e-10  # eigenvalues below this fraction of the largest count as zero (as _gaussian.whitener)


def batched_whitener(covs: torch.Tensor, rcond: float = _RCOND) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For covariances (K, D, D): whiteners W_k (K, D, D) with W_k W_kᵀ = pinv(Σ_k) (columns of dropped
    eigen-directions are zero), log pseudo-determinants (K,) and ranks (K,)."""
    evals, evecs = torch.linalg.eigh(covs)
    keep = evals > rcond * evals.amax(1, keepdim=True).clamp_min(0)
    keep &= evals > 0
    inv_sqrt = torch.where(keep, evals.clamp_min(torch.finfo(evals.dtype).tiny).rsqrt(), torch.zeros_like(evals))
    logdet = torch.where(keep, evals.clamp_min(torch.finfo(evals.dtype).tiny).log(), torch.zeros_like(evals)).sum(1)
    return evecs * inv_sqrt[:, None, :], logdet, keep.sum(1)


class GMM(Detector):
    name = "gmm"
    needs_labels = True
    param_grid = {"covariance": ["tied", "per_class"], "reg_covar": [1e-6, 1e-4, 1e-2, 1e-1]}

    def __init__(self, covariance: str = "tied", reg_covar: float = 1e-6, features: str = "features"):
        self.covariance = covariance
        self.reg_covar = reg_covar
        self.features = features

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    def _fit(self, train, labels, head, model) -> None:
        z = as_float(train[self.features])
        self.fit_from_stats(gaussian_stats(z, labels, per_class=self.covariance == "per_class"))

    def fit_from_stats(self, stats: GaussianStats, head=None) -> "GMM":
        """Fit from sufficient statistics (merged across shards by ``oodlens.scale``; ``fit`` passes those of all
        rows, so both paths share this code). ``"per_class"`` needs statistics with per-class scatters."""
        if self.covariance not in ("tied", "per_class"):
            raise OODLensError(f"GMM covariance must be 'tied' or 'per_class', got {self.covariance!r}")
        if not (isinstance(self.reg_covar, (int, float)) and math.isfinite(self.reg_covar) and self.reg_covar >= 0):
            raise OODLensError(f"GMM reg_covar must be a finite number >= 0, got {self.reg_covar!r}")
        d = stats.dim
        means, counts = stats.class_means()
        center, total = stats.covariance()
        scale = float(torch.diagonal(total).mean())
        if not scale > 0:
            raise OODLensError("GMM: all training features are identical (zero variance)")
        covs = stats.tied_covariance()[None] if self.covariance == "tied" else stats.class_covariances()
        covs = covs + (self.reg_covar * scale) * torch.eye(d, dtype=torch.float64, device=covs.device)
        w, logdet, rank = batched_whitener(covs)
        if bool((rank == 0).any()):
            bad = (rank == 0).nonzero().flatten().tolist()
            raise OODLensError(f"GMM: classes {bad[:10]} have zero covariance (one sample, or identical samples); "
                               "use reg_covar > 0 or covariance='tied'")
        log_pi = torch.log(counts.to(torch.float64) / counts.sum())
        mark_fitted(self, d)
        self.center_ = center
        self.log_norm_ = log_pi - 0.5 * (rank.to(torch.float64) * math.log(2 * math.pi) + logdet)
        if self.covariance == "tied":
            self.whiten_ = w[0]
            self.means_white_ = (means - center) @ w[0]
        else:
            self.whiten_ = w
            self.means_white_ = torch.einsum("cd,cde->ce", means - center, w)
        return self

    def _score(self, x) -> torch.Tensor:
        z = as_float(x[self.features])
        mw = self.means_white_.to(z.dtype)
        log_norm = self.log_norm_.to(z.dtype)
        out = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
        if self.whiten_.ndim == 2:
            for rows, p in centred_products(z, self.center_, self.whiten_):
                out[rows] = self._neg_log_density(sq_dist_to_means(p, mw), log_norm)
            return out
        c, d, e = self.whiten_.shape
        # every class's whitener side by side, (D, C·e), cast and laid out in one copy
        w_cat = torch.empty(d, c, e, dtype=z.dtype, device=z.device).copy_(self.whiten_.permute(1, 0, 2)).view(d, c * e)
        for rows, p in centred_products(z, self.center_, w_cat, _PER_CLASS_BLOCK):
            sq = p.view(-1, c, e).sub_(mw).square_().sum(2)        # ‖W_cᵀ(z − μ) − W_cᵀ(μ_c − μ)‖² per class
            out[rows] = self._neg_log_density(sq, log_norm)
        return out

    @staticmethod
    def _neg_log_density(sq: torch.Tensor, log_norm: torch.Tensor) -> torch.Tensor:
        """−logsumexp_c(log_norm_c − ½ sq_c) per row, from the (rows, C) squared whitened distances ``sq``."""
        return torch.logsumexp(sq.mul_(-0.5).add_(log_norm), dim=1).neg_()
