"""Chunked similarity search against a bank of training vectors, shared by the bank-based detectors
(NNGuide, Relation).

Nothing here ever holds the full (N_query × N_bank) similarity matrix: queries are processed in blocks of rows and
the bank in blocks of columns, so peak memory is about ``budget`` elements whatever the sizes. Results are exact
(no approximate index): ``topk_inner`` keeps a running top-k across bank blocks.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import OODLensError
from ._blocks import row_slices

#: default number of matrix elements one block may hold (2**23 float32 = 32 MiB)
DEFAULT_BUDGET = 1 << 23


def block_shape(n_query: int, n_bank: int, budget: int = DEFAULT_BUDGET, extra_cols: int = 0) -> tuple[int, int]:
    """(query rows, bank columns) of one block so that ``rows × (cols + extra_cols) ≤ budget`` (at least 1 × 1)."""
    cols = max(1, min(n_bank, budget // 2))
    rows = max(1, min(n_query, budget // (cols + extra_cols)))
    return rows, cols


#: rows whose largest |value| lies outside [1/SAFE_SCALE, SAFE_SCALE] are rescaled before a norm is taken
SAFE_SCALE = 1e15


def rescale_rows(z: torch.Tensor) -> torch.Tensor:
    """``z`` (N, D) with every row divided by its largest |value| when some row's largest |value| lies outside
    [1e-15, 1e15] (else ``z`` itself, no copy). A positive factor per row leaves each row's direction unchanged,
    while squared norms of rows ~1e30 overflow float32 (every unit vector becomes 0) and of rows ~1e-30 underflow
    (the 1e-12 norm clamp of ``F.normalize`` then scrambles the ranking)."""
    if z.numel() == 0:
        return z
    a = torch.linalg.vector_norm(z, ord=float("inf"), dim=1, keepdim=True)
    if bool(((a > SAFE_SCALE) | ((a < 1 / SAFE_SCALE) & (a > 0))).any()):
        z = z / torch.where(a > 0, a, torch.ones_like(a))
    return z


def l2_normalise(z: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Rows divided by their Euclidean norm. ``eps > 0``: ``z / sqrt(|z|² + eps)`` (as the Relation reference);
    ``eps = 0``: ``F.normalize`` (norm clamped at 1e-12, as the NNGuide reference)."""
    if eps > 0:
        return z / torch.sqrt((z * z).sum(1, keepdim=True) + eps)
    return F.normalize(rescale_rows(z), dim=1)


def topk_inner(query: torch.Tensor, bank: torch.Tensor, k: int, budget: int = DEFAULT_BUDGET) -> torch.Tensor:
    """The ``k`` largest inner products ``query_i · bank_j`` over j, per query row, sorted descending: (N, k).

    Exact and chunked: each block of query rows scans the bank block by block and merges the block's candidates
    with its running top-k.
    """
    n, m = query.shape[0], bank.shape[0]
    if not 1 <= k <= m:
        raise OODLensError(f"k={k} nearest neighbours requested but the bank holds {m} vectors")
    bank = bank.to(query.dtype)
    out = torch.empty(n, k, dtype=query.dtype, device=query.device)
    rows, cols = block_shape(n, m, budget, extra_cols=k)
    for rs in row_slices(n, rows):
        q = query[rs]
        best: torch.Tensor | None = None
        for cs in row_slices(m, cols):
            sims = q @ bank[cs].T
            if best is not None:
                sims = torch.cat([best, sims], dim=1)
            best = sims.topk(min(k, sims.shape[1]), dim=1).values
        out[rs] = best
    return out


def sum_over_bank(query: torch.Tensor, bank: torch.Tensor,
                  pair_fn: Callable[[slice, slice], torch.Tensor], budget: int = DEFAULT_BUDGET) -> torch.Tensor:
    """``Σ_j pair_fn(rows, cols)[i, j]`` for every query row i, computed block by block.

    ``pair_fn(rows, cols)`` returns the (len(rows), len(cols)) block of a pairwise quantity between the query
    rows ``rows`` and the bank rows ``cols``; only one block exists at a time.
    """
    n, m = query.shape[0], bank.shape[0]
    out = torch.zeros(n, dtype=query.dtype, device=query.device)
    rows, cols = block_shape(n, m, budget)
    for rs in row_slices(n, rows):
        for cs in row_slices(m, cols):
            out[rs] += pair_fn(rs, cs).sum(1)
    return out
