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
* ``"pca"`` — approximate: candidates from a low-dimensional projection, then an exact re-rank. At fit, the
  eigenvectors of the *uncentred* second moment of the unit bank (float64; the mean direction is kept) give a
  projection P (D × d'). A query's inner products with the whole bank are approximated in d' dimensions,
  ``candidates`` = ⌈m·k⌉ best bank rows are kept (same two-step selection), their full vectors are gathered and
  their exact inner products taken, and the best k of those are the neighbours. Whenever the true k-th neighbour
  is among the candidates the score is *exact*; otherwise the reported k-th neighbour is a farther one.
  ``dim`` (d') and ``candidates`` (m, a multiple of k) are calibrated at fit unless given: on seeded calibration
  queries (500 training rows, each excluding itself, and 500 synthetic off-manifold queries
  normalize((1 − λ)·ẑ_i + λ·s) where s takes every coordinate from an independently drawn training row — the
  product of the training marginals — and λ = ``synthetic_mix``, default 0.5), recall@k of every (d', m) on a grid
  (d' ∈ {16 … 384} < D, m ∈ {1.5 … 8}) is read off one exact search; the cheapest pair under a CPU cost model
  (one gathered candidate ≈ 64·D streamed bank numbers; measured 30–200 on a shared CPU) whose recall reaches
  ``target_recall`` (default 0.99) on *both* query sets wins; if none beats the exact search's cost, the exact
  search is used (``dim_`` = None). Fixing ``dim`` or ``candidates`` restricts the grid; fixing both forces that pair.
  Recall is *calibrated, not guaranteed*: OOD data farther from the training manifold than the synthetic queries
  loses neighbours (raise ``synthetic_mix`` towards 1, or ``target_recall``, to buy OOD recall with speed).
  Deterministic: the calibration draws from ``seed``. Measured (``benchmarks/knn_approx.py``, fit 50 000 × 512
  from 100 classes, score 40 000, 2 shared CPU cores at load ≈ 3–4): calibrated d' = 96, 3·k candidates, recall
  0.9999 on ID and 0.906 on unseen-class OOD queries, and *no* speed-up over the exact search (0.97–1.15×): on
  that CPU the gather + re-rank of the candidates (random rows of the bank) costs as much as the 5× smaller
  projected pass saves. Prefer ``"exact"`` unless a measurement on your hardware says otherwise.

``backend="auto"`` uses faiss (``pip install faiss-cpu``; ``IndexFlatIP``) for the exact search when it is
installed and the features are on the CPU, and the torch code otherwise; ``"torch"`` / ``"faiss"`` force one. The
``"pca"`` search always runs in torch. Both search the same fitted state (``bank_``, and for ``"pca"``
``projection_``), so save/load and results do not depend on the backend.
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
_CALIBRATION_QUERIES = 500  # per query set (ID, synthetic)
_CALIBRATION_DIMS = (16, 32, 48, 64, 96, 128, 192, 256, 384)
_CALIBRATION_MULTS = (1.5, 2, 3, 4, 6, 8)
_GATHER_COST = 64  # one gathered + re-ranked candidate ≈ 64·D streamed bank numbers (CPU; measured 30-200)
_SELECT_COST = 20  # the group-max selection costs about 20 streamed numbers per bank row


def _block(device: torch.device) -> int:
    return _BLOCK_CUDA if device.type == "cuda" else _BLOCK_CPU


def select_topk(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``s.topk(k, dim=1)`` for a contiguous (n, m) block, through group maxima: the maxima of groups of g
    consecutive columns (g = 32, fewer when k is large), the k best groups, then the top-k of their k·g columns
    and the < g tail columns. The k largest group maxima are k distinct elements ≥ every element outside those
    groups, so the values are ``topk``'s (indices may differ only among exactly tied values)."""
    n, m = s.shape
    g = min(_GROUP, m // (4 * k))
    if g < 4 or n == 0:
        return s.topk(k, dim=1)
    full = m // g
    grouped = s[:, :full * g].view(n, full, g)
    groups = grouped.amax(2).topk(k, dim=1, sorted=False).indices  # (n, k)
    vals = grouped.gather(1, groups[:, :, None].expand(n, k, g)).view(n, k * g)
    if full * g < m:
        vals = torch.cat([vals, s[:, full * g:]], dim=1)
    v, pos = vals.topk(k, dim=1)
    in_group = pos < k * g
    col = torch.where(in_group, groups.gather(1, (pos // g).clamp_max(k - 1)) * g + pos % g,
                      pos - k * g + full * g)
    return v, col


def exact_topk(query: torch.Tensor, bank: torch.Tensor, k: int,
               block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest inner products of each query row with the bank rows, and their bank indices: (N, k) each,
    sorted descending. Blocks of ``block`` numbers at most; the bank is split into column blocks only when one
    query row against the whole bank would not fit."""
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
            torch.matmul(query[i:i + rows], bank.T, out=s)
            vals[i:i + rows], idx[i:i + rows] = select_topk(s, k)
        return vals, idx
    cols = max(k, block // 1024)
    rows = max(1, block // (cols + k))
    for i in range(0, n, rows):
        q = query[i:i + rows]
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


def projected_topk(query: torch.Tensor, bank: torch.Tensor, bank_proj: torch.Tensor, projection: torch.Tensor,
                   k: int, candidates: int, block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-k inner products: the ``candidates`` best bank rows by projected inner product
    (``query @ projection`` against ``bank_proj``), re-ranked by their exact inner products. (N, k) each, sorted.
    Products and gathers write into buffers reused across blocks (fresh large CPU allocations page-fault)."""
    n, m, d = query.shape[0], bank.shape[0], bank.shape[1]
    candidates = min(max(candidates, k), m)
    block = block or _block(query.device)
    vals = torch.empty(n, k, dtype=query.dtype, device=query.device)
    idx = torch.empty(n, k, dtype=torch.long, device=query.device)
    qp = query @ projection
    rows = min(n, max(1, block // m))
    sub = min(rows, max(1, _RERANK_BLOCK // (candidates * d)))  # rows per re-rank (cache-sized)
    buf = query.new_empty(rows, m)
    vec_buf = query.new_empty(sub * candidates, d)
    for i in range(0, n, rows):
        s = buf[: min(rows, n - i)]
        torch.matmul(qp[i:i + rows], bank_proj.T, out=s)
        _, cand = select_topk(s, candidates)
        for j in range(0, s.shape[0], sub):
            c = cand[j:j + sub]
            r = c.shape[0]
            vecs = torch.index_select(bank, 0, c.flatten(), out=vec_buf[: r * candidates]).view(r, candidates, d)
            exact = torch.bmm(vecs, query[i + j:i + j + r, :, None]).squeeze(2)
            v, pos = exact.topk(k, dim=1)
            vals[i + j:i + j + r], idx[i + j:i + j + r] = v, c.gather(1, pos)
    return vals, idx


def second_moment_basis(bank: torch.Tensor) -> torch.Tensor:
    """Eigenvectors (D × D, columns by decreasing eigenvalue) of the uncentred second moment of the bank rows,
    accumulated in float64 in row blocks; each column's sign is fixed (largest-magnitude entry positive)."""
    d = bank.shape[1]
    acc = torch.zeros(d, d, dtype=torch.float64, device=bank.device)
    rows = max(1, _block(bank.device) // (4 * d))
    for i in range(0, bank.shape[0], rows):
        x = bank[i:i + rows].double()
        acc += x.T @ x
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a D × D eigh gains nothing from threads and crawls on a busy CPU (0.05 s vs 4 s)
    try:
        _, vecs = torch.linalg.eigh(acc)
    finally:
        torch.set_num_threads(threads)
    vecs = vecs.flip(1)
    sign = vecs.gather(0, vecs.abs().argmax(0, keepdim=True)).sign()
    return (vecs * sign).float().contiguous()


def calibration_queries(bank: torch.Tensor, k: int, synthetic_mix: float, seed: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded calibration queries and their exact neighbours: (queries (Q, D), true top-k indices (Q, k),
    boolean (Q,) marking the synthetic off-manifold ones). ID queries are bank rows, themselves excluded."""
    m, d = bank.shape
    g = torch.Generator().manual_seed(seed + 1)
    n_q = min(m, _CALIBRATION_QUERIES)
    who = torch.randperm(m, generator=g)[:n_q].to(bank.device)
    base = bank[torch.randperm(m, generator=g)[:n_q].to(bank.device)]
    rows = torch.randint(0, m, (n_q, d), generator=g).to(bank.device)
    marginal = F.normalize(bank.gather(0, rows), dim=1)  # every coordinate from its own training row
    synthetic = F.normalize((1 - synthetic_mix) * base + synthetic_mix * marginal, dim=1)
    _, nn_id = exact_topk(bank[who], bank, k + 1)
    is_self = nn_id == who[:, None]
    keep = ~is_self
    keep[:, -1] &= is_self.any(1)  # no self among the k+1: drop the last instead
    nn_id = nn_id[keep].view(n_q, k)
    _, nn_syn = exact_topk(synthetic, bank, k)
    queries = torch.cat([bank[who], synthetic])
    flag = torch.arange(2 * n_q, device=bank.device) >= n_q
    return queries, torch.cat([nn_id, nn_syn]), flag


def calibrate_projection(bank: torch.Tensor, basis: torch.Tensor, k: int, target: float, synthetic_mix: float,
                         seed: int, dim: int | None = None, mult: float | None = None
                         ) -> tuple[int | None, float | None, float, float]:
    """Cheapest (d', m) on the calibration grid (or the given one where fixed) whose recall@k reaches
    ``target`` on both the ID and the synthetic calibration queries, as (d', m, recall_id, recall_synthetic);
    d' = None when the exact search is cheaper than every passing pair. A true neighbour is found exactly when
    its projected inner product is at least the ⌈m·k⌉-th largest one of its query (self included for ID)."""
    m_bank, d_full = bank.shape
    queries, nn, synthetic = calibration_queries(bank, k, synthetic_mix, seed)
    dims = [dim] if dim is not None else [x for x in _CALIBRATION_DIMS if x < d_full]
    mults = [mult] if mult is not None else list(_CALIBRATION_MULTS)
    exact_cost = m_bank * (d_full + _SELECT_COST)
    best: tuple[float, int | None, float | None, float, float] = (exact_cost, None, None, 1.0, 1.0)
    for d in dims:
        if dim is None and m_bank * (d + _SELECT_COST) >= best[0]:
            break
        p = basis[:, :d]
        bp = bank @ p
        widths = [min(m_bank, max(k, math.ceil(x * k))) for x in mults]
        kth, at_nn = [], []
        rows = min(queries.shape[0], max(1, _block(bank.device) // m_bank))
        buf = bank.new_empty(rows, m_bank)
        qp = queries @ p
        for i in range(0, queries.shape[0], rows):
            s = buf[: min(rows, queries.shape[0] - i)]
            torch.matmul(qp[i:i + rows], bp.T, out=s)
            top = select_topk(s, max(widths))[0]
            kth.append(top[:, [w - 1 for w in widths]])
            at_nn.append(s.gather(1, nn[i:i + rows]))
        kth, at_nn = torch.cat(kth), torch.cat(at_nn)
        for j, x in enumerate(mults):
            found = (at_nn >= kth[:, j:j + 1]).double().mean(1)
            r_id, r_syn = float(found[~synthetic].mean()), float(found[synthetic].mean())
            cost = m_bank * (d + _SELECT_COST) + _GATHER_COST * d_full * widths[j]
            if dim is not None and mult is not None:  # both fixed: no choice to make
                return d, x, r_id, r_syn
            if min(r_id, r_syn) >= target and cost < best[0]:
                best = (cost, d, x, r_id, r_syn)
                break  # larger m at this d' only costs more
    return best[1], best[2], best[3], best[4]


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

    def __init__(self, k: int = 50, sample_ratio: float = 1.0, search: str = "exact", dim: int | None = None,
                 candidates: float | None = None, target_recall: float = 0.99, synthetic_mix: float = 0.5,
                 backend: str = "auto", seed: int = 0, features: str = "features"):
        self.k = k
        self.sample_ratio = sample_ratio
        self.search = search
        self.dim = dim
        self.candidates = candidates
        self.target_recall = target_recall
        self.synthetic_mix = synthetic_mix
        self.backend = backend
        self.seed = seed
        self.features = features

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    # -- fit ---------------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise OODLensError(f"KNN k must be a positive integer, got {self.k!r}")
        if not 0 < self.sample_ratio <= 1:
            raise OODLensError(f"KNN sample_ratio must be in (0, 1], got {self.sample_ratio!r}")
        if self.search not in ("exact", "pca"):
            raise OODLensError(f"KNN search must be 'exact' or 'pca', got {self.search!r}")
        if self.backend not in ("auto", "torch", "faiss"):
            raise OODLensError(f"KNN backend must be 'auto', 'torch' or 'faiss', got {self.backend!r}")
        if self.dim is not None and (isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1):
            raise OODLensError(f"KNN dim must be a positive integer or None, got {self.dim!r}")
        if self.candidates is not None and (isinstance(self.candidates, bool)
                                            or not isinstance(self.candidates, (int, float))
                                            or not self.candidates >= 1):
            raise OODLensError(f"KNN candidates must be a number ≥ 1 (a multiple of k) or None, "
                               f"got {self.candidates!r}")
        if not 0 < self.target_recall <= 1:
            raise OODLensError(f"KNN target_recall must be in (0, 1], got {self.target_recall!r}")
        if not 0 <= self.synthetic_mix <= 1:
            raise OODLensError(f"KNN synthetic_mix must be in [0, 1], got {self.synthetic_mix!r}")

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
        self._index_cache = self._bank_proj = None
        for stale in ("dim_", "candidates_", "calibration_recall_", "projection_"):  # from an earlier "pca" fit
            self.__dict__.pop(stale, None)
        self.bank_ = bank.contiguous()
        if self.search == "exact":
            if self._use_faiss(bank.device):
                self._faiss_index()  # built at fit, so scoring times only the search
            return
        d_full = bank.shape[1]
        if self.dim is not None and self.dim > d_full:
            raise OODLensError(f"KNN dim={self.dim} exceeds the feature dimension {d_full}")
        basis = second_moment_basis(self.bank_)
        k_cal = min(self.k, bank.shape[0] - 1)
        dim = mult = r_id = r_syn = None
        if k_cal >= 1:  # calibration needs k neighbours besides the query itself
            dim, mult, r_id, r_syn = calibrate_projection(self.bank_, basis, k_cal, self.target_recall,
                                                          self.synthetic_mix, self.seed, self.dim, self.candidates)
        self.dim_, self.candidates_ = dim, mult  # dim_ None: the exact search is used
        self.calibration_recall_ = None if r_id is None else {"id": r_id, "synthetic": r_syn}
        self.projection_ = None if dim is None else basis[:, :dim].contiguous()

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
        """(similarities, bank indices) of the k nearest training features, (N, k) each, best first (for the
        ``"pca"`` search: the best k among the candidates)."""
        x = self._check_features(x, "features to score")
        self._move_state(x[self.features].device)
        q = F.normalize(as_float(x[self.features]).float(), dim=1)
        return self._search(q)

    def _search(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.k
        if not 1 <= k <= self.bank_.shape[0]:
            raise OODLensError(f"KNN k={k} but the training bank holds {self.bank_.shape[0]} vectors")
        if getattr(self, "dim_", None) is not None:
            bp = getattr(self, "_bank_proj", None)
            if bp is None or bp.device != q.device or bp.shape[1] != self.projection_.shape[1]:
                bp = self._bank_proj = (self.bank_ @ self.projection_).contiguous()
            width = math.ceil(self.candidates_ * k)
            return projected_topk(q, self.bank_, bp, self.projection_, k, width)
        if self._use_faiss(q.device):
            v, i = self._faiss_index().search(q.contiguous().numpy(), k)
            return torch.from_numpy(v), torch.from_numpy(i).long()
        return exact_topk(q, self.bank_, k)

    def _faiss_index(self):
        if getattr(self, "_index_cache", None) is not None:
            return self._index_cache
        index = _faiss().IndexFlatIP(self.bank_.shape[1])
        index.add(self.bank_.cpu().numpy())
        self._index_cache = index
        return index

    def _score(self, x) -> torch.Tensor:
        q = F.normalize(as_float(x[self.features]).float(), dim=1)
        _, idx = self._search(q)
        return torch.linalg.vector_norm(q - self.bank_[idx[:, self.k - 1]], dim=1)
