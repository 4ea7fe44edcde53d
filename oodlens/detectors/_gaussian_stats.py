"""Sufficient statistics of labelled features for the Gaussian detectors (Mahalanobis, RMDS, GMM), mergeable across
shards so that a fit from many machines equals the fit in one process.

For rows x_i with labels y_i, per class c (float64 throughout):

    n_c = #{i : y_i = c},   μ_c = (1/n_c) Σ_{y_i=c} x_i
    S   = Σ_i (x_i − μ_{y_i})(x_i − μ_{y_i})ᵀ                  (within-class scatter: tied covariance = S / N)
    S_c = Σ_{y_i=c} (x_i − μ_c)(x_i − μ_c)ᵀ                     (per-class scatters, only when asked for)

and the total mean and covariance follow without another pass (within + between):

    μ = Σ_c n_c μ_c / N,   Σ_total = (S + Σ_c n_c (μ_c − μ)(μ_c − μ)ᵀ) / N

Every shard computes centred statistics about its own class means (two passes over its rows, as the one-process
fit), and two shards merge by the pairwise update of Chan, Golub & LeVeque (1979, "Updating formulae and a pairwise
algorithm for computing sample variances"): with δ_c = μ_c^b − μ_c^a and n_c = n_c^a + n_c^b,

    μ_c = μ_c^a + δ_c n_c^b / n_c,   S = S^a + S^b + Σ_c (n_c^a n_c^b / n_c) δ_c δ_cᵀ   (likewise per class)

No raw moments Σ x xᵀ are formed, so large feature means do not cancel. The one-process fit is the fit from the
statistics of one shard (``gaussian_stats`` on all rows), so both paths run the same code from the statistics on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import OODLensError
from ._gaussian import per_class_covariances, second_moment

_FIELDS = ("counts", "means", "scatter", "class_scatter")


@dataclass(frozen=True)
class GaussianStats:
    """Class counts (C,), class means (C, D), within-class scatter S (D, D) and optionally per-class scatters
    (C, D, D), all float64. A class absent from a shard has count 0 and mean 0."""

    counts: torch.Tensor
    means: torch.Tensor
    scatter: torch.Tensor
    class_scatter: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    # -- merging -----------------------------------------------------------------------------------------
    def _padded(self, c: int) -> "GaussianStats":
        extra = c - self.counts.shape[0]
        if extra <= 0:
            return self
        z = self.means.new_zeros
        return GaussianStats(torch.cat([self.counts, z(extra)]), torch.cat([self.means, z(extra, self.dim)]),
                             self.scatter, None if self.class_scatter is None
                             else torch.cat([self.class_scatter, z(extra, self.dim, self.dim)]))

    def merge(self, other: "GaussianStats") -> "GaussianStats":
        """The statistics of both shards' rows together (Chan et al.'s pairwise update, see the module)."""
        if other.dim != self.dim:
            raise OODLensError(f"cannot merge Gaussian statistics of {self.dim}-dimensional features with "
                               f"{other.dim}-dimensional ones: every shard must have the same feature width")
        if (self.class_scatter is None) != (other.class_scatter is None):
            raise OODLensError("cannot merge Gaussian statistics with and without per-class scatters")
        c = max(self.counts.shape[0], other.counts.shape[0])
        a, b = self._padded(c), other._padded(c)
        n = a.counts + b.counts
        frac_b = torch.where(n > 0, b.counts / n.clamp_min(1), torch.zeros_like(n))
        delta = b.means - a.means
        weight = a.counts * frac_b  # n_a n_b / n (0 for a class absent from either side)
        means = a.means + delta * frac_b[:, None]
        scatter = a.scatter + b.scatter + (delta * weight[:, None]).T @ delta
        per_class = None
        if a.class_scatter is not None:
            per_class = a.class_scatter + b.class_scatter + weight[:, None, None] * delta[:, :, None] * delta[:, None, :]
        return GaussianStats(n, means, scatter, per_class)

    @staticmethod
    def merge_all(parts: "list[GaussianStats]") -> "GaussianStats":
        """Merge shards pairwise in a balanced tree (the order is fixed by the list: results are reproducible)."""
        if not parts:
            raise OODLensError("no Gaussian statistics to merge (no shards)")
        parts = list(parts)
        while len(parts) > 1:
            parts = [parts[i].merge(parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
        return parts[0]

    # -- what the detectors need ---------------------------------------------------------------------------
    def class_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Class means (C, D) and counts (C,); classes without a sample raise (as ``_gaussian.class_means``)."""
        if self.counts.shape[0] < 2:
            raise OODLensError(f"a class-conditional Gaussian needs at least 2 classes, got {self.counts.shape[0]}")
        empty = (self.counts == 0).nonzero().flatten().tolist()
        if empty:
            raise OODLensError(f"classes {empty[:10]} have no training samples; relabel classes to 0..C-1")
        return self.means, self.counts

    def tied_covariance(self) -> torch.Tensor:
        """S / N: the maximum-likelihood covariance shared by the classes, (D, D)."""
        return self.scatter / self.n

    def covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Total mean (D,) and ML covariance (D, D) of all rows, ignoring labels (within + between scatter)."""
        n = self.counts.sum()
        mu = (self.counts[:, None] * self.means).sum(0) / n
        dev = self.means - mu
        return mu, (self.scatter + (dev * self.counts[:, None]).T @ dev) / n

    def class_covariances(self) -> torch.Tensor:
        """S_c / n_c for every class, (C, D, D)."""
        if self.class_scatter is None:
            raise OODLensError("these Gaussian statistics hold no per-class scatters (per_class=False)")
        return self.class_scatter / self.counts[:, None, None]

    # -- transport (safetensors-friendly) --------------------------------------------------------------------
    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in _FIELDS if getattr(self, k) is not None}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "GaussianStats":
        missing = [k for k in _FIELDS[:3] if k not in tensors]
        if missing:
            raise OODLensError(f"Gaussian statistics miss {missing}")
        return cls(*(tensors[k].to(torch.float64) if k in tensors else None for k in _FIELDS))


def gaussian_stats(x: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                   per_class: bool = False) -> GaussianStats:
    """Centred statistics of the rows ``x`` (N, D) with ``labels`` (N,) (two passes, float64 blocks; classes
    absent from these rows get count 0). ``per_class`` also keeps S_c (C·D² numbers)."""
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise OODLensError(f"gaussian_stats needs features (N, D) and labels (N,), got {tuple(x.shape)} and "
                           f"{tuple(labels.shape)}")
    labels = labels.to(x.device)
    c = num_classes if num_classes is not None else (int(labels.max()) + 1 if labels.numel() else 0)
    counts = torch.bincount(labels, minlength=c).to(torch.float64)
    sums = torch.zeros(c, x.shape[1], dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], 8192):
        sums.index_add_(0, labels[i:i + 8192], x[i:i + 8192].to(torch.float64))
    means = sums / counts.clamp_min(1)[:, None]
    scatter = second_moment(x, lambda i, j: means[labels[i:j]]) * x.shape[0] if x.shape[0] else \
        torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    per = None
    if per_class:
        present = counts > 0
        per = torch.zeros(c, x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        if bool(present.any()):
            # per_class_covariances needs every class present: run it on the present classes, relabelled
            remap = torch.cumsum(present.long(), 0) - 1
            covs = per_class_covariances(x, remap[labels], means[present], counts[present].long())
            per[present] = covs * counts[present][:, None, None]
    return GaussianStats(counts, means, scatter, per)


def mark_fitted(detector, dim: int) -> None:
    """What ``Detector.fit`` records besides the state, for a fit from statistics: the per-row feature shape
    (D,) of the detector's one feature, and the fitted flag."""
    detector.feature_shapes_ = {detector.features: [int(dim)]}
    detector.fitted_ = True
