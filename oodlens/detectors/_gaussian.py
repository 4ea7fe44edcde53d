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


#: rows per block when accumulating float64 statistics, so memory stays at the input plus one block
_ROWS = 8192


def class_means(x: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means (C, D) in float64 and counts (C,). Classes absent from ``labels`` raise."""
    c = num_classes if num_classes is not None else num_classes_of(labels)
    sums = torch.zeros(c, x.shape[1], dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], _ROWS):
        sums.index_add_(0, labels[i:i + _ROWS], x[i:i + _ROWS].to(torch.float64))
    counts = torch.bincount(labels, minlength=c).to(x.device)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise OODLensError(f"classes {empty[:10]} have no training samples; relabel classes to 0..C-1")
    return sums / counts[:, None].to(torch.float64), counts


def second_moment(x: torch.Tensor, centre_of_rows) -> torch.Tensor:
    """(1/N) Σ_i (x_i − m_i)(x_i − m_i)ᵀ in float64, block by block; ``centre_of_rows(i, j)`` gives m for rows i:j."""
    d = x.shape[1]
    acc = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], _ROWS):
        block = x[i:i + _ROWS].to(torch.float64) - centre_of_rows(i, i + _ROWS)
        acc.addmm_(block.T, block)
    return acc / x.shape[0]


def tied_covariance(x: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Covariance of ``x - means[labels]`` (maximum likelihood, divided by N), float64 (D, D)."""
    return second_moment(x, lambda i, j: means[labels[i:j]])


def covariance(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and ML covariance (D, D) of ``x`` in float64."""
    mu = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], _ROWS):
        mu += x[i:i + _ROWS].to(torch.float64).sum(0)
    mu /= x.shape[0]
    return mu, second_moment(x, lambda i, j: mu)


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
