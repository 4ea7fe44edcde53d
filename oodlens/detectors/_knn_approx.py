"""Approximate KNN search for the KNN detector: an inverted-file (IVF) index in torch, judged by the detector's
quality (AUROC, FPR@95), not by neighbour recall.

Index (``IVFIndex.build``): spherical k-means (Lloyd iterations on unit vectors, seeded, trained on at most 256 rows
per cell as faiss does) cuts the unit bank into ``cells`` cells; each bank row is stored in the list of its nearest
centroid. Search (``ivf_kth``): a query scans only the ``probes`` cells whose centroids are most similar to it,
computing exact float32 inner products with every row of those lists, and returns the k-th best of them. The scan
is list-major: for each cell, the block of queries that probe it is multiplied against the cell's rows in one
product and reduced to its top-k, so the work is ≈ probes/cells of the exact search's products plus one
(queries × cells) product. On a CPU the cells are shared by as many Python threads as torch uses, each running
single-threaded ops (``_row_threads.run_rows``): many medium products parallelise better that way.

Why a missed neighbour can only raise an OOD score. The detector's score is the distance to the k-th nearest
training feature, ‖ẑ − ẑ_(k)‖. The IVF search returns the exact k-th nearest neighbour *within a subset* of the
bank (the probed lists). Removing rows from a set can only remove candidates closer than the k-th, never add one,
so the subset's k-th distance is ≥ the full bank's: s_approx(x) ≥ s_exact(x) for every query, equality when the
k true neighbours lie in the probed cells. ID queries sit inside a dense, well-clustered region of the bank, so
their neighbours share their cells and their scores hardly move; OOD queries fall between cells and lose
neighbours, which pushes their scores *up* — in the direction the detector already ranks them. Recall on OOD
queries can therefore be poor while AUROC and FPR@95 stay put (``benchmarks/knn_approx_detector.py`` measures
both against the exact detector). Queries whose probed lists hold fewer than k rows are searched exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import OODLensError
from ._knn_search import exact_topk
from ._row_threads import run_rows

_TRAIN_PER_CELL = 256  # k-means training rows per cell (faiss's default cap)
_CANDIDATES = 1 << 24  # candidate slots per query block (block × probes × k): 64 MiB of values, 128 MiB of indices


def default_cells(n: int) -> int:
    """About 2√N cells (faiss suggests 4√N to 16√N for large banks; fewer, larger lists keep products efficient
    on a CPU), at least 1 and at most N // 32 so that lists are not tiny."""
    return max(1, min(int(round(2 * math.sqrt(n))), n // 32))


@dataclass
class IVFIndex:
    centroids: torch.Tensor  # (L, D) unit
    order: torch.Tensor  # (N,) bank row of each list position (lists are contiguous)
    offsets: torch.Tensor  # (L + 1,) list boundaries in ``order``

    @classmethod
    def build(cls, bank: torch.Tensor, cells: int, iters: int = 10, seed: int = 0) -> "IVFIndex":
        """Spherical k-means on the unit ``bank`` (N, D) and the inverted lists."""
        n = bank.shape[0]
        if isinstance(cells, bool) or not isinstance(cells, int) or not 1 <= cells <= n:
            raise OODLensError(f"KNN cells must be an integer in [1, N={n}], got {cells!r}")
        g = torch.Generator().manual_seed(seed)
        sample = bank[torch.randperm(n, generator=g)[: min(n, cells * _TRAIN_PER_CELL)].to(bank.device)]
        cent = sample[torch.randperm(sample.shape[0], generator=g)[:cells].to(bank.device)].clone()
        for _ in range(iters):
            assign = _nearest(sample, cent)
            sums = torch.zeros_like(cent).index_add_(0, assign, sample)
            empty = torch.bincount(assign, minlength=cells) == 0
            if bool(empty.any()):  # re-seed empty cells on random training rows
                pick = torch.randint(0, sample.shape[0], (int(empty.sum()),), generator=g).to(bank.device)
                sums[empty] = sample[pick]
            cent = F.normalize(sums, dim=1)
        assign = _nearest(bank, cent)
        order = torch.argsort(assign, stable=True)
        offsets = torch.zeros(cells + 1, dtype=torch.long, device=bank.device)
        offsets[1:] = torch.cumsum(torch.bincount(assign, minlength=cells), 0)
        return cls(cent.contiguous(), order, offsets)


def _nearest(x: torch.Tensor, cent: torch.Tensor, rows: int = 16384) -> torch.Tensor:
    """Index of the most similar centroid for each row, in row blocks."""
    return torch.cat([(x[i:i + rows] @ cent.T).argmax(1) for i in range(0, x.shape[0], rows)])


def _cells_in_threads(scan, cells: int, device: torch.device) -> None:
    """``scan(slice of cells)`` over all cells: on a CPU with several torch threads, cells are shared by that many
    Python threads running single-threaded torch ops (many medium products parallelise better this way than each
    product over all threads, and far better on a busy machine); elsewhere in one call."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        scan(slice(0, cells))
        return
    torch.set_num_threads(1)
    try:
        run_rows(scan, cells, threads, min_rows=1)
    finally:
        torch.set_num_threads(threads)


def ivf_kth(query: torch.Tensor, lists: torch.Tensor, index: IVFIndex, k: int, probes: int,
            bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The k-th largest inner product of each unit query row among the rows of its ``probes`` nearest cells, and
    that row's bank index, (N,) each; plus how many queries (probed lists with fewer than k rows) were searched
    exactly instead. ``lists`` is ``bank[index.order]`` (the lists laid out contiguously)."""
    n = query.shape[0]
    cells = index.centroids.shape[0]
    probes = min(probes, cells)
    sizes = index.offsets[1:] - index.offsets[:-1]
    offsets = index.offsets.tolist()
    vals = torch.empty(n, dtype=query.dtype, device=query.device)
    idx = torch.empty(n, dtype=torch.long, device=query.device)
    short = torch.zeros(n, dtype=torch.bool, device=query.device)
    block = max(1, _CANDIDATES // (probes * k))
    for b in range(0, n, block):
        q = query[b:b + block]
        m = q.shape[0]
        probe = (q @ index.centroids.T).topk(probes, dim=1).indices  # (m, P)
        short[b:b + m] = sizes[probe].sum(1) < k
        flat = probe.flatten()  # pair p = row · P + slot probes cell flat[p]
        by_cell = torch.argsort(flat, stable=True)
        bounds = torch.cumsum(torch.bincount(flat, minlength=cells), 0).tolist()
        cand_v = torch.full((m * probes, k), float("-inf"), dtype=query.dtype, device=query.device)
        cand_i = torch.zeros((m * probes, k), dtype=torch.long, device=query.device)

        def scan(part: slice, q=q, by_cell=by_cell, bounds=bounds, cand_v=cand_v, cand_i=cand_i) -> None:
            for c in range(part.start, part.stop):  # one product per cell: its queries against its list
                start, end = (bounds[c - 1] if c else 0), bounds[c]
                lo, hi = offsets[c], offsets[c + 1]
                if end > start and hi > lo:
                    pairs = by_cell[start:end]
                    v, j = (q[pairs // probes] @ lists[lo:hi].T).topk(min(k, hi - lo), dim=1)
                    if v.shape[1] < k:
                        v = F.pad(v, (0, k - v.shape[1]), value=float("-inf"))
                        j = F.pad(j, (0, k - j.shape[1]))
                    cand_v.index_copy_(0, pairs, v)  # rows of distinct (query, slot) pairs: no two cells collide
                    cand_i.index_copy_(0, pairs, j.add_(lo))

        _cells_in_threads(scan, cells, query.device)
        v, pos = cand_v.view(m, -1).topk(k, dim=1)
        vals[b:b + m] = v[:, -1]
        idx[b:b + m] = index.order[cand_i.view(m, -1).gather(1, pos[:, -1:]).squeeze(1)]
    fallback = short.nonzero().squeeze(1)
    if fallback.numel():
        v, j = exact_topk(query[fallback], bank, k)
        vals[fallback], idx[fallback] = v[:, -1], j[:, -1]
    return vals, idx, int(fallback.numel())
