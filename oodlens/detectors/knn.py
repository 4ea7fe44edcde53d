"""Deep nearest neighbours, KNN (Sun, Ming, Zhu & Li, ICML 2022, "Out-of-Distribution Detection with Deep Nearest
Neighbors"), on penultimate features.

    ẑ = z / ‖z‖₂                                  (test and training features alike)
    score(x) = ‖ẑ − ẑ_(k)‖₂                        ẑ_(k): the k-th nearest normalised training feature

Higher = farther from the training set = more OOD. The reference (deeplearning-wisc/knn-ood; OpenOOD's
``KNNPostprocessor``) searches a faiss ``IndexFlatL2`` and returns −D[:, k−1], the negated *squared* distance; we
return the distance itself (paper, Eq. 2), a monotone map of the same quantity. Normalisation divides by the norm
clamped at 1e-12 (``F.normalize``), where the reference adds 1e-10 to it.

Defaults: ``k=50``, the reference's choice for CIFAR-10 (``run_cifar.py``); the paper uses k=1000 with a random
``sample_ratio`` α=1% of the training set for ImageNet (``run_imagenet.py``). ``sample_ratio`` < 1 keeps a seeded
random subset of ⌊αN⌋ training features (without replacement, as the reference).

Search (``search``):

* ``"exact"`` (default) — brute force on unit vectors, where ‖a − b‖² = 2 − 2 a·b. Blocks of test rows are
  multiplied against the whole bank into one reused buffer (no fresh allocation per block), and each block's top-k
  is selected in two steps that give exactly ``topk``'s values: the maximum of every group of 32 consecutive bank
  columns, the k best groups, then the top-k of those k·32 columns (the k largest group maxima are k distinct
  elements ≥ every element outside those groups). When one query row against the whole bank would not fit in a
  block, the bank is cut into column blocks and the running top-k merged. No N_test × N_train matrix exists. The
  k-th neighbour's distance is then recomputed directly as ‖ẑ − ẑ_(k)‖ (no cancellation in 2 − 2cos). Products
  are float32 (bf16/fp16/int8 were measured and rejected: no faster on CPUs without AMX/VNNI, and bf16's 8-bit
  mantissa mis-orders neighbours at cos ≈ 0.99). Measured: 1.31× the raw inner-product pass (median of 3 runs,
  0.83–1.32×, on 2 shared cores at load ≈ 3–4; ``benchmarks/knn_approx.py``).
* ``"half"`` — approximate candidates, *certified* exact result: the whole bank is searched with a float16 product
  (tensor cores on a GPU), the best ``candidates``·k rows of each query are kept, and the half products' error bound
  decides which of them need an exact float32 product. Every half product s̃ lies within e(q) of the true one:
      e(q) = ‖q − q̃‖·max‖x‖ + ‖q̃‖·max‖x − x̃‖ + (γ_D + u)·‖q̃‖·max‖x̃‖ + 2γ_D,   γ_D = D·2⁻²⁴/(1 − D·2⁻²⁴)
  (rounding of the query and of the bank to float16, measured exactly; float32 accumulation over D terms; u = 2⁻¹¹
  for a float16 output, 0 where ``torch.mm(..., out_dtype=torch.float32)`` runs (CUDA); the float32 re-rank).
  Scoring needs only the k-th neighbour: with the candidates sorted, s̃_1 ≥ … ≥ s̃_w, the true k-th value lies in
  [s̃_k − e, s̃_k + e], rows with s̃ > s̃_k + 2e are surely above it and rows with s̃ < s̃_k − 2e surely below, so
  only the few rows in between are re-ranked exactly (``half_kth``). ``neighbours`` re-ranks every candidate
  (``half_topk``). A query is certified when its last candidate is surely below (so is every row outside); the
  others — near-ties at the boundary, more uncertain rows than the window — are searched again exactly. The result
  is therefore the exact search's (recall 1, scores equal up to float32 rounding) whatever the data;
  ``last_fallbacks`` tells how many rows of the last call needed the exact pass. Measured
  (``benchmarks/knn_approx.py --device cuda``, fit 50 000 × 512, score 40 000, k = 50, H100): exact 53 ms, half
  23 ms (2.25×; 2.5× on the structured data), recall 1.0000 on ID and OOD queries, 0–1 of 40 000 rows re-searched.
  On CPUs without fast float16 products it is *slower* than ``"exact"`` (0.15× on a 2-core AVX-512 CPU).

``backend="auto"`` uses faiss (``pip install faiss-cpu``; ``IndexFlatIP``) for the exact search when it is
installed and the features are on the CPU, and the torch code otherwise; ``"torch"`` / ``"faiss"`` force one. The
``"half"`` search always runs in torch. All search the same fitted state (``bank_``), so save/load and results do
not depend on the backend or the search.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import as_float
from ..errors import OODLensError
from .base import Detector

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


def kth_distance(z: torch.Tensor, bank: torch.Tensor, kth: torch.Tensor) -> torch.Tensor:
    """‖ẑ_i − bank[kth_i]‖ per row with ẑ = z/‖z‖, computed directly (no cancellation in 2 − 2cos), in row blocks
    of 2²⁰ numbers so that no second copy of the queries is made."""
    out = z.new_empty(z.shape[0])
    rows = max(1, (1 << 20) // max(z.shape[1], 1))
    for i in range(0, z.shape[0], rows):
        out[i:i + rows] = torch.linalg.vector_norm(F.normalize(z[i:i + rows], dim=1) - bank[kth[i:i + rows]], dim=1)
    return out


def _faiss():
    try:
        import faiss  # noqa: PLC0415
    except ImportError as e:
        raise OODLensError("KNN backend='faiss' needs faiss: pip install faiss-cpu") from e
    return faiss


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


class KNN(Detector):
    name = "knn"
    param_grid = {"k": [1, 5, 10, 20, 50, 100, 200, 500, 1000]}
    score_only_params = frozenset({"k"})

    def __init__(self, k: int = 50, sample_ratio: float = 1.0, search: str = "exact", candidates: float = 2.0,
                 backend: str = "auto", seed: int = 0, features: str = "features"):
        self.k = k
        self.sample_ratio = sample_ratio
        self.search = search
        self.candidates = candidates
        self.backend = backend
        self.seed = seed
        self.features = features
        self.last_fallbacks = 0

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    # -- fit ---------------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise OODLensError(f"KNN k must be a positive integer, got {self.k!r}")
        if not 0 < self.sample_ratio <= 1:
            raise OODLensError(f"KNN sample_ratio must be in (0, 1], got {self.sample_ratio!r}")
        if self.search not in ("exact", "half"):
            raise OODLensError(f"KNN search must be 'exact' or 'half', got {self.search!r}")
        if self.backend not in ("auto", "torch", "faiss"):
            raise OODLensError(f"KNN backend must be 'auto', 'torch' or 'faiss', got {self.backend!r}")
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, (int, float)) \
                or not self.candidates >= 1:
            raise OODLensError(f"KNN candidates must be a number ≥ 1 (a multiple of k), got {self.candidates!r}")

    def _fit(self, train, labels, head, model) -> None:
        self._check_params()
        bank = F.normalize(as_float(train[self.features]).float(), dim=1)
        n = bank.shape[0]
        if self.sample_ratio < 1:
            keep = max(1, int(n * self.sample_ratio))
            g = torch.Generator().manual_seed(self.seed)
            bank = bank[torch.randperm(n, generator=g)[:keep].sort().values.to(bank.device)]
        if self.k > bank.shape[0]:
            raise OODLensError(f"KNN k={self.k} but the training bank holds only {bank.shape[0]} vectors")
        self._index_cache = self._half_bank = None
        self.bank_ = bank.contiguous()
        if self.search == "exact" and self._use_faiss(bank.device):
            self._faiss_index()  # built at fit, so scoring times only the search

    # -- score -------------------------------------------------------------------------------------------
    def _use_faiss(self, device: torch.device) -> bool:
        if self.backend == "faiss":
            if device.type != "cpu":
                raise OODLensError("KNN backend='faiss' works on CPU tensors; move the features to the CPU or use "
                                   "backend='torch'")
            _faiss()
            return True
        return self.backend == "auto" and device.type == "cpu" and _faiss_available()

    def neighbours(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarities, bank indices) of the k nearest training features, (N, k) each, best first."""
        x = self._check_features(x, "features to score")
        self._move_state(x[self.features].device)
        q = F.normalize(as_float(x[self.features]).float(), dim=1)
        return self._search(q)

    def _search(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.k
        if not 1 <= k <= self.bank_.shape[0]:
            raise OODLensError(f"KNN k={k} but the training bank holds {self.bank_.shape[0]} vectors")
        if self.search == "half":
            v, i, self.last_fallbacks = half_topk(q, self.bank_, self._prepared_half(q.device), k,
                                                  math.ceil(self.candidates * k))
            return v, i
        if self._use_faiss(q.device):
            v, i = self._faiss_index().search(q.contiguous().numpy(), k)
            return torch.from_numpy(v), torch.from_numpy(i).long()
        return exact_topk(q, self.bank_, k)

    def _prepared_half(self, device: torch.device) -> HalfBank:
        prepared = getattr(self, "_half_bank", None)
        if prepared is None or prepared.device != device:
            prepared = self._half_bank = HalfBank(self.bank_)
        return prepared

    def _faiss_index(self):
        if getattr(self, "_index_cache", None) is not None:
            return self._index_cache
        index = _faiss().IndexFlatIP(self.bank_.shape[1])
        index.add(self.bank_.cpu().numpy())
        self._index_cache = index
        return index

    def _score(self, x) -> torch.Tensor:
        z = as_float(x[self.features]).float()
        if self.search == "half":  # only the k-th neighbour is needed: fewer exact products
            _, kth, self.last_fallbacks = half_kth(F.normalize(z, dim=1), self.bank_,
                                                   self._prepared_half(z.device), self.k,
                                                   math.ceil(self.candidates * self.k))
        elif self._use_faiss(z.device):
            kth = self._search(F.normalize(z, dim=1))[1][:, self.k - 1]
        else:  # queries normalised block by block: no normalised copy of the whole input
            kth = exact_topk(z, self.bank_, self.k, normalise=True)[1][:, self.k - 1]
        return kth_distance(z, self.bank_, kth)
