"""Shared Gaussian statistics: class means, tied covariance, a whitening map, and squared Mahalanobis distances
to every class mean in one matrix expansion (no loop over classes).

Numerics: statistics are accumulated in float64; the covariance is inverted by eigendecomposition with small
eigenvalues truncated (a pseudo-inverse, as ``sklearn.covariance.EmpiricalCovariance.precision_`` uses), so more
dimensions than samples, or a singular covariance, still gives a well-defined distance; :func:`fit_whitener` offers
OAS shrinkage instead (``covariance="shrinkage"``, and by default when N < 2·D or the covariance is ill-conditioned),
so that directions outside the training span still count. Inputs are centred on
their global mean before the expansion ``|z|² − 2 z·m + |m|²`` to avoid cancellation at large feature norms.

Memory: fitting statistics are accumulated over row blocks of ``_ROWS`` rows (one float64 block at a time, never a
float64 copy of the whole input); scoring helpers (:func:`centred_products`) work on row blocks of at most
``SCORE_BLOCK`` numbers in reused buffers, so a detector's peak stays near its input size.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..errors import OODLensError
from ._blocks import rows_within


def num_classes_of(labels: torch.Tensor) -> int:
    return int(labels.max()) + 1 if labels.numel() else 0


#: rows per block when accumulating float64 statistics, so memory stays at the input plus one block
_ROWS = 8192
#: numbers per work buffer when scoring in row blocks (4 MiB in float32): few, large products, small peak
SCORE_BLOCK = 1 << 20


def block_rows(n: int, width: int, budget: int | None = None) -> int:
    """:func:`._blocks.rows_within` with the default budget ``SCORE_BLOCK`` (read at call time)."""
    return rows_within(n, width, SCORE_BLOCK if budget is None else budget)


def class_means(x: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means (C, D) in float64 and counts (C,), over the rows where ``mask`` (N,) is True (default:
    all rows). Classes without a (selected) row raise."""
    c = num_classes if num_classes is not None else num_classes_of(labels)
    sums = torch.zeros(c, x.shape[1], dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], _ROWS):
        xi, yi = x[i:i + _ROWS], labels[i:i + _ROWS]
        if mask is not None:
            keep = mask[i:i + _ROWS]
            xi, yi = xi[keep], yi[keep]
        sums.index_add_(0, yi, xi.to(torch.float64))
    counts = torch.bincount(labels if mask is None else labels[mask], minlength=c).to(x.device)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise OODLensError(f"classes {empty[:10]} have no training samples; relabel classes to 0..C-1")
    return sums / counts[:, None].to(torch.float64), counts


def second_moment(x: torch.Tensor, centre_of_rows) -> torch.Tensor:
    """(1/N) Σ_i (x_i − m_i)(x_i − m_i)ᵀ in float64, block by block; ``centre_of_rows(i, j)`` gives m for rows i:j."""
    d = x.shape[1]
    acc = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], _ROWS):
        block = x[i:i + _ROWS].to(torch.float64, copy=True).sub_(centre_of_rows(i, i + _ROWS))
        acc.addmm_(block.T, block)
    return acc / x.shape[0]


def tied_covariance(x: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Covariance of ``x - means[labels]`` (maximum likelihood, divided by N), float64 (D, D)."""
    return second_moment(x, lambda i, j: means[labels[i:j]])


def mean64(x: torch.Tensor) -> torch.Tensor:
    """Column means (D,) of ``x`` (N, D) in float64, block by block (no float64 copy of ``x``)."""
    mu = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], _ROWS):
        mu += x[i:i + _ROWS].to(torch.float64).sum(0)
    return mu.div_(x.shape[0])


def covariance(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and ML covariance (D, D) of ``x`` in float64."""
    mu = mean64(x)
    return mu, second_moment(x, lambda i, j: mu)


def whitener(cov: torch.Tensor, rcond: float = 1e-10) -> torch.Tensor:
    """``W`` (D, r) with ``W @ W.T = pinv(cov)``: eigenvalues below ``rcond * max`` are dropped."""
    evals, evecs = torch.linalg.eigh(cov.to(torch.float64))
    top = float(evals.max()) if evals.numel() else 0.0
    if top <= 0:
        raise OODLensError("covariance is zero: all training features are identical")
    keep = evals > rcond * top
    return evecs[:, keep] / evals[keep].sqrt()


#: choices of the ``covariance`` hyper-parameter of the Gaussian detectors
COVARIANCE_CHOICES = ("auto", "empirical", "shrinkage")
#: ``covariance="auto"`` shrinks when λ_min < ILL_CONDITIONED · λ_max (or when N < 2·D)
ILL_CONDITIONED = 1e-6


def check_covariance_choice(choice: str) -> str:
    if choice not in COVARIANCE_CHOICES:
        raise OODLensError(f"covariance must be one of {', '.join(COVARIANCE_CHOICES)}, got {choice!r}")
    return choice


def oas_shrinkage(cov: torch.Tensor, n: int) -> float:
    """Shrinkage intensity ρ of the Oracle Approximating Shrinkage estimator (Chen, Wiesel, Eldar & Hero, IEEE TSP
    2010, Eq. 23, in scikit-learn's form ``sklearn.covariance.OAS``): with a = mean(Σ²), μ = tr(Σ)/D,

        ρ = min(1, (a + μ²) / ((n + 1)(a − μ²/D)))

    It needs only the covariance and N (so it works from statistics merged across shards)."""
    d = cov.shape[0]
    a = float((cov * cov).mean())
    mu = float(torch.diagonal(cov).sum()) / d
    den = (n + 1) * (a - mu * mu / d)
    return 1.0 if den <= 0 else min((a + mu * mu) / den, 1.0)


def fit_whitener(cov: torch.Tensor, n: int, covariance: str = "auto", what: str = "covariance"
                 ) -> tuple[torch.Tensor, float]:
    """Whitener ``W`` (D, r) of an ML covariance of ``n`` rows and the shrinkage used (0.0 = empirical).

    * ``"empirical"`` — the pseudo-inverse of Σ (:func:`whitener`): directions with no training variance are
      ignored, so with N < D an input that differs from the training data only outside its span scores as ID;
    * ``"shrinkage"`` — Σ_ρ = (1 − ρ) Σ + ρ (tr Σ / D) I with the OAS intensity ρ (:func:`oas_shrinkage`):
      full rank, every direction counts;
    * ``"auto"`` — shrinkage when N < 2·D or Σ is ill-conditioned (λ_min < 1e-6 · λ_max), else empirical.
    """
    check_covariance_choice(covariance)
    cov = cov.to(torch.float64)
    d = cov.shape[0]
    evals, evecs = torch.linalg.eigh(cov)
    top = float(evals.max()) if evals.numel() else 0.0
    if top <= 0:
        raise OODLensError(f"{what} is zero: all training features are identical")
    shrink = covariance == "shrinkage" or (
        covariance == "auto" and (n < 2 * d or float(evals.min()) < ILL_CONDITIONED * top))
    if not shrink:
        return whitener(cov), 0.0
    rho = oas_shrinkage(cov, n)
    shrunk = (1.0 - rho) * evals.clamp_min(0) + rho * float(evals.clamp_min(0).sum()) / d
    return evecs / shrunk.sqrt(), rho


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


def centred_products(z: torch.Tensor, center: torch.Tensor, proj: torch.Tensor,
                     budget: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(rows, (z[rows] − center) @ proj)`` for consecutive row blocks of ``z`` (N, D), in ``z``'s precision.

    Both the centred rows and the product live in two work buffers allocated once (each at most ``budget``
    numbers, default ``SCORE_BLOCK``), so the yielded block is overwritten by the next one: reduce it before
    advancing.
    """
    n, d = z.shape
    rows = block_rows(n, max(d, proj.shape[1]), budget)
    like = {"dtype": z.dtype, "device": z.device}
    center, proj = center.to(**like), proj.to(**like)
    centred, product = torch.empty(rows, d, **like), torch.empty(rows, proj.shape[1], **like)
    for i in range(0, n, rows):
        r = min(rows, n - i)
        c = torch.sub(z[i:i + r], center, out=centred[:r])
        yield slice(i, i + r), torch.mm(c, proj, out=product[:r])


def min_sq_distance(z: torch.Tensor, center: torch.Tensor, whiten: torch.Tensor, means_white: torch.Tensor
                    ) -> torch.Tensor:
    """min_c ‖(z − center)·W − m_c‖² per row of ``z`` (N,), in ``z``'s precision, over row blocks in reused
    buffers (``centred_products``): no whitened copy of the whole input."""
    out = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
    means = means_white.to(z.dtype)
    for rows, p in centred_products(z, center, whiten):
        out[rows] = sq_dist_to_means(p, means).amin(1)
    return out


def per_class_covariances(x: torch.Tensor, labels: torch.Tensor, means: torch.Tensor,
                          counts: torch.Tensor) -> torch.Tensor:
    """ML covariance of every class, (C, D, D) float64, by one batched product.

    Rows are sorted by class and cut into segments of at most L = ceil(N / C) rows; zero-padded segments
    (S ≤ 2C of them) are multiplied in one ``bmm`` and summed back into their classes, so memory is about twice
    the input plus twice the output however unbalanced the classes are.
    """
    n, d = x.shape
    c = means.shape[0]
    centred = x.to(torch.float64) - means[labels]
    order = torch.argsort(labels, stable=True)
    ys = labels[order]
    seg_len = -(-n // c)
    pos = torch.arange(n, device=x.device) - (torch.cumsum(counts, 0) - counts)[ys]
    segs_per_class = -(-counts // seg_len)
    first_seg = torch.cumsum(segs_per_class, 0) - segs_per_class
    seg = first_seg[ys] + pos // seg_len
    n_seg = int(segs_per_class.sum())
    padded = torch.zeros(n_seg, seg_len, d, dtype=torch.float64, device=x.device)
    padded[seg, pos % seg_len] = centred[order]
    seg_class = torch.repeat_interleave(torch.arange(c, device=x.device), segs_per_class)
    sums = torch.zeros(c, d, d, dtype=torch.float64, device=x.device)
    sums.index_add_(0, seg_class, padded.transpose(1, 2) @ padded)
    return sums / counts.to(torch.float64)[:, None, None]
