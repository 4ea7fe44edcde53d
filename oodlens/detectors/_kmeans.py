"""Seeded k-means (Lloyd's algorithm with k-means++ seeding) on the rows of a float tensor, for detectors that
condition on clusters of unlabelled features (SSD). Distances by one matrix expansion per chunk
(``_gaussian.sq_dist_to_means``), never an N × N matrix; an emptied cluster is re-seeded at the row farthest from
its centre, so every cluster keeps at least one row."""

from __future__ import annotations

import torch

from ..errors import OODLensError
from ._gaussian import sq_dist_to_means


def kmeans(x: torch.Tensor, k: int, iters: int = 100, seed: int = 0, tol: float = 1e-6
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (k, D) and the label of every row (N,), deterministic for ``seed``. Stops when no label changes or
    the centres move less than ``tol`` times the data scale."""
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise OODLensError(f"k-means needs 1 ≤ clusters ≤ N = {n}, got {k!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:  # 0 left every label at -1
        raise OODLensError(f"k-means needs iters ≥ 1 (Lloyd iterations), got {iters!r}")
    x = x.to(torch.float64)
    g = torch.Generator().manual_seed(int(seed))
    # k-means++: each new centre drawn with probability ∝ squared distance to the nearest chosen centre
    centres = x[torch.randint(n, (1,), generator=g).to(x.device)]
    d2 = sq_dist_to_means(x, centres)[:, 0]
    for _ in range(1, k):
        prob = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        nxt = torch.multinomial(prob.cpu(), 1, generator=g).to(x.device)
        centres = torch.cat([centres, x[nxt]])
        d2 = torch.minimum(d2, sq_dist_to_means(x, x[nxt])[:, 0])
    scale = float(x.var(0).sum()) or 1.0
    labels = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for _ in range(iters):
        dist = sq_dist_to_means(x, centres)
        new = dist.argmin(1)
        counts = torch.bincount(new, minlength=k)
        for c in (counts == 0).nonzero().flatten().tolist():  # rare: re-seed at the worst-fitted row
            far = int(dist.gather(1, new[:, None])[:, 0].argmax())
            new[far] = c
            dist[far] = 0
            counts = torch.bincount(new, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, new, x)
        moved = sums / counts[:, None].to(x.dtype)
        shift = float(((moved - centres) ** 2).sum())
        centres = moved
        if torch.equal(new, labels) or shift <= tol * scale:
            labels = new
            break
        labels = new
    return centres, labels
