"""Shared Gaussian statistics: class means, tied covariance, a whitening map, and squared Mahalanobis distances
to every class mean in one matrix expansion (no loop over classes).

Numerics: statistics are accumulated in float64; the covariance is inverted by eigendecomposition with small
eigenvalues truncated (a pseudo-inverse, as ``sklearn.covariance.EmpiricalCovariance.precision_`` uses), so more
dimensions than samples, or a singular covariance, still gives a well-defined distance. Inputs are centred on
their global mean before the expansion ``|z|² − 2 z·m + |m|²`` to avoid cancellation at large feature norms.
"""

from __future__ import annotations

import torch

from ..errors import OODLensError


def num_classes_of(labels: torch.Tensor) -> int:
    return int(labels.max()) + 1 if labels.numel() else 0


def class_means(x: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means (C, D) in float64 and counts (C,). Classes absent from ``labels`` raise."""
    c = num_classes if num_classes is not None else num_classes_of(labels)
    x64 = x.to(torch.float64)
    sums = torch.zeros(c, x.shape[1], dtype=torch.float64, device=x.device).index_add_(0, labels, x64)
    counts = torch.bincount(labels, minlength=c).to(x.device)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise OODLensError(f"classes {empty[:10]} have no training samples; relabel classes to 0..C-1")
    return sums / counts[:, None].to(torch.float64), counts


def tied_covariance(x: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Covariance of ``x - means[labels]`` (maximum likelihood, divided by N), float64 (D, D)."""
    centred = x.to(torch.float64) - means[labels]
    return centred.T @ centred / x.shape[0]


def covariance(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and ML covariance (D, D) of ``x`` in float64."""
    x64 = x.to(torch.float64)
    mu = x64.mean(0)
    c = x64 - mu
    return mu, c.T @ c / x.shape[0]


def whitener(cov: torch.Tensor, rcond: float = 1e-10) -> torch.Tensor:
    """``W`` (D, r) with ``W @ W.T = pinv(cov)``: eigenvalues below ``rcond * max`` are dropped."""
    evals, evecs = torch.linalg.eigh(cov.to(torch.float64))
    top = float(evals.max()) if evals.numel() else 0.0
    if top <= 0:
        raise OODLensError("covariance is zero: all training features are identical")
    keep = evals > rcond * top
    return evecs[:, keep] / evals[keep].sqrt()


def sq_dist_to_means(z: torch.Tensor, m: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Squared Euclidean distances (N, C) between rows of ``z`` and rows of ``m`` by one expansion per chunk."""
    m_sq = (m * m).sum(1)
    out = torch.empty(z.shape[0], m.shape[0], dtype=z.dtype, device=z.device)
    for i in range(0, z.shape[0], chunk):
        zi = z[i:i + chunk]
        d = torch.addmm(m_sq[None, :], zi, m.T, alpha=-2.0)
        d += (zi * zi).sum(1, keepdim=True)
        out[i:i + chunk] = d.clamp_min_(0)
    return out
