"""Exact and half-precision nearest-neighbour search on unit vectors for the KNN detector (``knn.py`` states the
method and both searches' guarantees and measured speed).

* ``exact_topk`` — blocks of query rows against the whole bank into one reused buffer, top-k through group maxima
  (``select_topk``); column blocks with a running top-k when one query row against the bank does not fit.
* ``half_topk`` / ``half_kth`` — a float16 pass ranks candidates; the error bound ``half_error_bound`` decides which
  need an exact float32 product and certifies the result, or sends the query to ``exact_topk``.

No (N_query × N_bank) matrix is ever formed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import OODLensError

_BLOCK_CPU = 1 << 24  # numbers one similarity block may hold (64 MiB in float32)
_BLOCK_CUDA = 1 << 28
_GROUP = 32  # bank columns per group in the two-step top-k
_RERANK_BLOCK = 1 << 23  # gathered numbers per re-rank step (fewer, larger ops: faster on a busy CPU)
_KTH_WINDOW = 32  # most uncertain rows per query re-ranked when only the k-th neighbour is needed


def _block(device: torch.device) -> int:
    return _BLOCK_CUDA if device.type == "cuda" else _BLOCK_CPU


def select_topk(s: torch.Tensor, k: int, strided: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``s.topk(k, dim=1)`` for a contiguous (n, m) block, through group maxima: the maxima of g = 32 groups
    of columns (fewer when k is large), the k best groups, then the top-k of their k·g columns and the < g tail
    columns. The k largest group maxima are k distinct elements ≥ every element outside those groups, so the values
    are ``topk``'s (indices may differ only among exactly tied values). On a CPU a group is g consecutive columns
    (a cache-friendly inner reduction); on a GPU it is every (m // g)-th column (a coalesced reduction across
    rows of the view, about 8× faster there than the inner one); ``strided`` overrides the choice."""
    n, m = s.shape
    g = min(_GROUP, m // (4 * k))
    if g < 4 or n == 0:
        return s.topk(k, dim=1)
    full = m // g
    strided = s.device.type != "cpu" if strided is None else strided
    if not strided:
        grouped = s[:, :full * g].view(n, full, g)
        groups = grouped.amax(2).topk(k, dim=1, sorted=False).indices  # (n, k)
        vals = grouped.gather(1, groups[:, :, None].expand(n, k, g)).reshape(n, k * g)
    else:
        grouped = s[:, :full * g].view(n, g, full)
        groups = grouped.amax(1).topk(k, dim=1, sorted=False).indices
        vals = grouped.gather(2, groups[:, None, :].expand(n, g, k)).reshape(n, g * k)
    if full * g < m:
        vals = torch.cat([vals, s[:, full * g:]], dim=1)
    v, pos = vals.topk(k, dim=1)
    in_group = pos < k * g
    if not strided:  # position r·g + t ↦ column groups[r]·g + t
        col = groups.gather(1, (pos // g).clamp_max(k - 1)) * g + pos % g
    else:  # position t·k + r ↦ column groups[r] + t·full
        col = groups.gather(1, (pos % k)) + (pos // k).clamp_max(g - 1) * full
    col = torch.where(in_group, col, pos - k * g + full * g)
    return v, col


def exact_topk(query: torch.Tensor, bank: torch.Tensor, k: int, block: int | None = None,
               normalise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest inner products of each query row with the bank rows, and their bank indices: (N, k) each,
    sorted descending. Blocks of ``block`` numbers at most; the bank is split into column blocks only when one
    query row against the whole bank would not fit. ``normalise``: the query rows are L2-normalised block by
    block (no normalised copy of the whole query)."""
    unit = F.normalize if normalise else (lambda z, dim: z)
    n, m = query.shape[0], bank.shape[0]
    if not 1 <= k <= m:
        raise OODLensError(f"k={k} nearest neighbours requested but the bank holds {m} vectors")
    block = block or _block(query.device)
    vals = torch.empty(n, k, dtype=query.dtype, device=query.device)
    idx = torch.empty(n, k, dtype=torch.long, device=query.device)
    if m <= block:  # whole bank per block of query rows: one product into a reused buffer + one selection
        rows = min(n, max(1, block // m))
        buf = query.new_empty(rows, m)
        for i in range(0, n, rows):
            s = buf[: min(rows, n - i)]
            torch.matmul(unit(query[i:i + rows], dim=1), bank.T, out=s)
            vals[i:i + rows], idx[i:i + rows] = select_topk(s, k)
        return vals, idx
    cols = max(k, block // 1024)
    rows = max(1, block // (cols + k))
    for i in range(0, n, rows):
        q = unit(query[i:i + rows], dim=1)
        best_v = best_i = None
        for j in range(0, m, cols):
            s = q @ bank[j:j + cols].T
            cand_i = torch.arange(j, j + s.shape[1], device=q.device).expand(s.shape[0], -1)
            if best_v is not None:
                s = torch.cat([best_v, s], dim=1)
                cand_i = torch.cat([best_i, cand_i], dim=1)
            best_v, pos = s.topk(min(k, s.shape[1]), dim=1)
            best_i = cand_i.gather(1, pos)
        vals[i:i + rows], idx[i:i + rows] = best_v, best_i
    return vals, idx


class HalfBank:
    """A unit bank prepared for the ``"half"`` search: its float16 copy and the two bank terms of the error
    bound (largest row norm, largest rounding error norm), in float64."""

    def __init__(self, bank: torch.Tensor):
        self.device = bank.device
        self.low = bank.half()
        rows = max(1, _RERANK_BLOCK // bank.shape[1])
        err = torch.cat([torch.linalg.vector_norm(bank[i:i + rows] - self.low[i:i + rows].float(), dim=1)
                         for i in range(0, bank.shape[0], rows)])  # row blocks: no float32 copy of the bank
        self.max_err = float(err.max())
        self.max_norm = float(torch.linalg.vector_norm(bank, dim=1).max())
        self.max_low_norm = float(_row_norms(self.low).max())
        self.float_out = _float_output_supported(bank.device)


def _float_output_supported(device: torch.device) -> bool:
    """Whether ``torch.mm(half, half, out_dtype=torch.float32)`` runs here (CUDA builds of recent torch): products
    are then written in float32, without the float16 output rounding."""
    try:
        a = torch.zeros(2, 2, dtype=torch.float16, device=device)
        return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def _row_norms(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norms of the rows of a (possibly float16) matrix, accumulated in float32 per row block."""
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    rows = max(1, _RERANK_BLOCK // max(x.shape[1], 1))
    for i in range(0, x.shape[0], rows):
        out[i:i + rows] = torch.linalg.vector_norm(x[i:i + rows].float(), dim=1)
    return out


def half_error_bound(query: torch.Tensor, query_low: torch.Tensor, bank: HalfBank) -> torch.Tensor:
    """e(q) per query row (float64): every half-pass product lies within e(q) of the exact inner product."""
    d = query.shape[1]
    gamma = d * 2.0 ** -24 / (1 - d * 2.0 ** -24)
    q_err = torch.linalg.vector_norm(query - query_low.float(), dim=1).double()
    q_low = _row_norms(query_low).double()
    out_rounding = 0.0 if bank.float_out else 2.0 ** -11  # float32 output: within gamma
    return (q_err * bank.max_norm + q_low * bank.max_err + (gamma + out_rounding) * q_low * bank.max_low_norm
            + 2 * gamma + 2.0 ** -24)


class _ExactHalfReductions:
    """Within the block, CUDA float16 products accumulate in float32 (no reduced-precision split-K), which the
    error bound assumes; restores the global flag on exit."""

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = self.saved


def _half_candidates(query: torch.Tensor, prepared: HalfBank, width: int, block: int):
    """Blocks of the float16 pass: (first row, query block, half products of its ``width`` best bank rows
    (sorted, descending), their bank indices, e(q) per row)."""
    m = prepared.low.shape[0]
    rows = min(query.shape[0], max(1, block // m))
    buf = None if prepared.float_out else torch.empty(rows, m, dtype=torch.float16, device=query.device)
    for i in range(0, query.shape[0], rows):
        q = query[i:i + rows]
        q_low = q.half()
        if prepared.float_out:
            s = torch.mm(q_low, prepared.low.T, out_dtype=torch.float32)
        else:
            s = buf[: q.shape[0]]
            with _ExactHalfReductions():
                torch.matmul(q_low, prepared.low.T, out=s)
        cand_v, cand = select_topk(s, width)
        yield i, q, cand_v.double(), cand, half_error_bound(q, q_low, prepared)


def _exact_at(q: torch.Tensor, bank: torch.Tensor, cols: torch.Tensor, rerank: int) -> torch.Tensor:
    """Exact float32 inner products of each query row with the bank rows ``cols[row]``: (r, w), computed on
    row slices of at most ``rerank`` gathered numbers."""
    r, w = cols.shape
    d = bank.shape[1]
    out = q.new_empty(r, w)
    sub = max(1, rerank // max(w * d, 1))
    for j in range(0, r, sub):
        vecs = bank.index_select(0, cols[j:j + sub].flatten()).view(-1, w, d)
        out[j:j + sub] = torch.bmm(vecs, q[j:j + sub, :, None]).squeeze(2)
    return out


def half_topk(query: torch.Tensor, bank: torch.Tensor, prepared: HalfBank, k: int, candidates: int,
              block: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Top-k inner products of unit query rows with the bank, as ``exact_topk``, from a float16 candidate pass:
    (values (N, k), indices (N, k), number of rows that failed the certificate and were searched exactly).
    Every candidate is re-ranked exactly; certified when the last candidate's half product + e(q) < t_k."""
    n, m = query.shape[0], bank.shape[0]
    if not 1 <= k <= m:
        raise OODLensError(f"k={k} nearest neighbours requested but the bank holds {m} vectors")
    width = min(max(candidates, k), m)
    block = block or _block(query.device)
    rerank = _RERANK_BLOCK if query.device.type == "cpu" else block  # cache-sized on a CPU, large on a GPU
    vals = torch.empty(n, k, dtype=query.dtype, device=query.device)
    idx = torch.empty(n, k, dtype=torch.long, device=query.device)
    certified = torch.ones(n, dtype=torch.bool, device=query.device)
    for i, q, cand_v, cand, bound in _half_candidates(query, prepared, width, block):
        r = q.shape[0]
        v, pos = _exact_at(q, bank, cand, rerank).topk(k, dim=1)
        vals[i:i + r], idx[i:i + r] = v, cand.gather(1, pos)
        if width < m:  # no row outside the candidates exceeds cand_v[:, -1] + e(q)
            certified[i:i + r] = cand_v[:, -1] + bound < v[:, -1].double()
    failed = (~certified).nonzero().squeeze(1)
    if failed.numel():
        vals[failed], idx[failed] = exact_topk(query[failed], bank, k, block)
    return vals, idx, int(failed.numel())


def half_kth(query: torch.Tensor, bank: torch.Tensor, prepared: HalfBank, k: int, candidates: int,
             window: int = _KTH_WINDOW, block: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Only the k-th largest inner product of each unit query row and its bank index, (N,) each, from the float16
    pass with as few exact products as the error bound allows, and the number of rows searched exactly.

    With the half products sorted, s̃_1 ≥ … ≥ s̃_w, the true k-th value T_k lies in [s̃_k − e, s̃_k + e]; rows with
    s̃ > s̃_k + 2e are surely above it (``lo`` of them), rows with s̃ < s̃_k − 2e surely below. So T_k is the
    (k − lo)-th largest exact product among the uncertain rows in between, which alone are re-ranked (a few per
    query). Certified when the last candidate is surely below and the uncertain rows fit in ``window``."""
    n, m = query.shape[0], bank.shape[0]
    if not 1 <= k <= m:
        raise OODLensError(f"k={k} nearest neighbours requested but the bank holds {m} vectors")
    width = min(max(candidates, k), m)
    block = block or _block(query.device)
    rerank = _RERANK_BLOCK if query.device.type == "cpu" else block
    vals = torch.empty(n, dtype=query.dtype, device=query.device)
    idx = torch.empty(n, dtype=torch.long, device=query.device)
    certified = torch.ones(n, dtype=torch.bool, device=query.device)
    for i, q, cand_v, cand, bound in _half_candidates(query, prepared, width, block):
        r = q.shape[0]
        s_k = cand_v[:, k - 1:k]
        lo = (cand_v > s_k + 2 * bound[:, None]).sum(1)  # surely above: the first lo positions
        hi = (cand_v >= s_k - 2 * bound[:, None]).sum(1)  # positions lo … hi-1 are uncertain
        u = min(window, width, int((hi - lo).max()))
        pos = (lo[:, None] + torch.arange(u, device=q.device)).clamp_max(width - 1)
        cols = cand.gather(1, pos)
        exact = _exact_at(q, bank, cols, rerank)
        exact[pos >= hi[:, None]] = float("-inf")  # window slots past the uncertain rows
        v, order = exact.sort(dim=1, descending=True)
        rank = (k - 1 - lo).clamp(0, u - 1)[:, None]
        vals[i:i + r] = v.gather(1, rank).squeeze(1)
        idx[i:i + r] = cols.gather(1, order.gather(1, rank)).squeeze(1)
        ok = hi - lo <= u
        if width < m:
            ok &= hi < width  # the last candidate (and so every row outside) is surely below
        certified[i:i + r] = ok
    failed = (~certified).nonzero().squeeze(1)
    if failed.numel():
        v, j = exact_topk(query[failed], bank, k, block)
        vals[failed], idx[failed] = v[:, -1], j[:, -1]
    return vals, idx, int(failed.numel())


def tie_safe_kth_distance(z: torch.Tensor, bank: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, k: int
                          ) -> torch.Tensor:
    """k-th neighbour distance from the top-K search (``vals``/``idx`` (N, K ≥ k), products sorted descending) that
    does not depend on bank order. Products carry a float32 error of at most γ_D = D·2⁻²⁴ each, so which of several
    rows whose products lie within 2γ_D of the k-th one ranks k-th can depend on where they sit in the bank. Those
    candidates (the window) get their exact distances (each a function of the row and the bank vector only), and the
    k-th distance is the (k − a)-th smallest of them, with a the candidates surely above the window; rows without a
    near-tie keep :func:`kth_distance` of the k-th candidate."""
    out = kth_distance(z, bank, idx[:, k - 1])
    window, above = tie_window(vals, k, z.shape[1])
    rows = (window.sum(1) > 1).nonzero().flatten()
    if rows.numel() == 0:
        return out
    window, above = window[rows], above[rows]
    r, c = window.nonzero(as_tuple=True)
    q = F.normalize(z[rows[r]], dim=1)
    d = torch.full(window.shape, float("inf"), dtype=out.dtype, device=out.device)
    d[r, c] = torch.linalg.vector_norm(q - bank[idx[rows[r], c]], dim=1)
    out[rows] = kth_within_window(d, above, k)
    return out


def tie_window(vals: torch.Tensor, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For top-K products ``vals`` (N, K, sorted descending) of D = ``dim`` float32 terms: the candidates within
    2γ_D (γ_D = D·2⁻²⁴) of the k-th product (the window, (N, K) bool) and the number surely above it (N,)."""
    gamma = dim * 2.0 ** -24
    s_k = vals[:, k - 1:k]
    return (vals - s_k).abs() <= 2 * gamma, (vals > s_k + 2 * gamma).sum(1)


def kth_within_window(window_dists: torch.Tensor, above: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th neighbour distance: the (k − a)-th smallest direct distance among the window's candidates
    (``window_dists``: their distances, +inf outside the window; a = ``above``)."""
    pos = (k - 1 - above).clamp(0, window_dists.shape[1] - 1)
    return window_dists.sort(1).values.gather(1, pos[:, None]).squeeze(1)


def kth_distance(z: torch.Tensor, bank: torch.Tensor, kth: torch.Tensor) -> torch.Tensor:
    """‖ẑ_i − bank[kth_i]‖ per row with ẑ = z/‖z‖, computed directly (no cancellation in 2 − 2cos), in row blocks
    of 2²⁰ numbers so that no second copy of the queries is made."""
    out = z.new_empty(z.shape[0])
    rows = max(1, (1 << 20) // max(z.shape[1], 1))
    for i in range(0, z.shape[0], rows):
        out[i:i + rows] = torch.linalg.vector_norm(F.normalize(z[i:i + rows], dim=1) - bank[kth[i:i + rows]], dim=1)
    return out
