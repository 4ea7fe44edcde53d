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

* ``"exact"`` (default) — brute force on unit vectors, where ‖a − b‖² = 2 − 2 a·b. The torch path streams blocks of
  test rows against the training bank (one matrix product and one ``topk`` per block; when the bank is too large
  for one block it is cut into column blocks and the running top-k merged), so memory is bounded by the block size
  and no N_test × N_train matrix exists. The k-th neighbour's distance is then recomputed directly as ‖ẑ − ẑ_(k)‖
  (no cancellation in 2 − 2cos for close neighbours). Products are float32 (TF32 is not enabled by us); bf16 was
  considered and rejected: its 8-bit mantissa mis-orders neighbours at cos ≈ 0.99, breaking exactness.
* ``"ivf"`` — an inverted-file index: spherical k-means (seeded; at most 256 points per centroid, 20 iterations)
  cuts the bank into ``nlist`` cells (default ⌈2√N⌉). With ``nprobe`` set, a query scans its ``nprobe`` most
  similar cells (classic IVF). With ``nprobe=None`` (default) probing is adaptive: a query scans every cell whose
  centroid similarity is within a margin δ of its best centroid's, and δ is calibrated at fit on up to 1000 seeded
  training rows used as queries (themselves excluded) as the smallest margin whose recall@k against the exact
  search reaches ``target_recall`` (default 0.99). Why adaptive: a fixed nprobe calibrated on ID queries loses
  most neighbours of OOD queries, whose centroid similarities are flat; a margin scans more cells exactly for
  those (measured: the gap between a query's best cell and the cells of its true neighbours is distributed
  alike for ID and near-OOD queries). Limitation, measured and not hidden: the calibration only sees ID queries,
  so recall on OOD queries is not guaranteed (0.99+ on near-OOD 512-d synthetic features, 0.6-0.7 on
  isotropic far-OOD points in 16-d in the tests), and on near-OOD data the margin scans a large share of the
  bank, so the speed-up shrinks. Use ``search="exact"`` when exact scores matter. Rows whose probed cells hold
  fewer than k vectors fall back to the exact search. See ``benchmarks/knn_approx.py`` for speed and recall.

``backend="auto"`` uses faiss (``pip install faiss-cpu``; ``IndexFlatIP`` / ``IndexIVFFlat`` on our centroids) when
it is installed and the features are on the CPU, and the torch code otherwise; ``"torch"`` / ``"faiss"`` force one
(adaptive IVF probing always runs in torch: faiss has no margin rule).
Both search the same fitted state (``bank_``, and for IVF ``centroids_``/``list_offsets_``), so save/load and
results do not depend on the backend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import as_float
from ..errors import OODLensError
from .base import Detector

_BLOCK_CPU = 1 << 24  # similarity numbers one block may hold (64 MiB in float32)
_BLOCK_CUDA = 1 << 28
_KMEANS_ITERS = 20
_KMEANS_MAX_PER_CENTROID = 256  # as faiss's ClusteringParameters.max_points_per_centroid
_CALIBRATION_QUERIES = 1000


def _block(device: torch.device) -> int:
    return _BLOCK_CUDA if device.type == "cuda" else _BLOCK_CPU


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
    if m <= block:  # whole bank per block of query rows: one product + one topk
        rows = max(1, block // m)
        for i in range(0, n, rows):
            vals[i:i + rows], idx[i:i + rows] = (query[i:i + rows] @ bank.T).topk(k, dim=1)
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


def spherical_kmeans(x: torch.Tensor, n_clusters: int, seed: int, n_iter: int = _KMEANS_ITERS) -> torch.Tensor:
    """Unit-norm centroids (n_clusters, D) of unit vectors ``x`` by seeded spherical k-means (cosine assignment);
    trained on at most 256 points per centroid. An empty cluster keeps its previous centroid."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    sample = x[torch.randperm(n, generator=g)[: min(n, _KMEANS_MAX_PER_CENTROID * n_clusters)].to(x.device)]
    cent = sample[torch.randperm(sample.shape[0], generator=g)[:n_clusters].to(x.device)].clone()
    for _ in range(n_iter):
        assign = assign_cells(sample, cent)
        sums = torch.zeros_like(cent).index_add_(0, assign, sample)
        filled = torch.bincount(assign, minlength=n_clusters) > 0
        cent = torch.where(filled[:, None], F.normalize(sums, dim=1), cent)
    return cent


def assign_cells(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the most similar centroid for every row, in blocks."""
    rows = max(1, _block(x.device) // centroids.shape[0])
    return torch.cat([(x[i:i + rows] @ centroids.T).argmax(1) for i in range(0, x.shape[0], rows)])


def ivf_topk(query: torch.Tensor, bank: torch.Tensor, centroids: torch.Tensor, offsets: torch.Tensor, k: int,
             nprobe: int, margin: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate top-k inner products over an inverted file. ``bank`` is sorted by cell; cell c holds rows
    ``offsets[c]:offsets[c+1]``. Each query scans its ``nprobe`` most similar cells, or, with ``margin``, every
    cell whose centroid similarity is within ``margin`` of its best one. Missing candidates are −inf / −1.

    Work is grouped by cell (one product and one top-k per probed cell, over all the queries probing it), then
    each query's per-cell candidates are merged with one top-k; (query, cell) pairs are processed in groups of
    at most ``block / k`` so memory stays bounded whatever the number of probes."""
    n, nlist = query.shape[0], centroids.shape[0]
    block = _block(query.device)
    vals = torch.full((n, k), -math.inf, dtype=query.dtype, device=query.device)
    idx = torch.full((n, k), -1, dtype=torch.long, device=query.device)
    for i in range(0, n, max(1, block // nlist)):
        q = query[i:i + max(1, block // nlist)]
        cs = q @ centroids.T
        if margin is None:
            cell = cs.topk(min(nprobe, nlist), dim=1).indices.flatten()
            qi = torch.arange(q.shape[0], device=q.device).repeat_interleave(min(nprobe, nlist))
        else:
            qi, cell = (cs >= cs.amax(1, keepdim=True) - margin).nonzero(as_tuple=True)  # query-major
        ends = torch.bincount(qi, minlength=q.shape[0]).cumsum(0)
        # cut the queries into groups holding at most block // k probed pairs (and at least one query)
        start, max_pairs = 0, max(1, block // k)
        while start < q.shape[0]:
            first = int(ends[start - 1]) if start else 0
            stop = max(start + 1, int(torch.searchsorted(ends, first + max_pairs, right=True)))
            last = int(ends[stop - 1])
            v, j = _scan_cells(q, qi[first:last], cell[first:last], bank, offsets, k)
            rows = qi[first:last] - start
            rank = torch.arange(last - first, device=q.device) - (ends[start:stop] - ends[start:stop].new_tensor(first)
                                                                  - torch.bincount(rows, minlength=stop - start))[rows]
            width = int(rank.max()) + 1 if rank.numel() else 1
            buf_v = torch.full((stop - start, width, k), -math.inf, dtype=q.dtype, device=q.device)
            buf_i = torch.full((stop - start, width, k), -1, dtype=torch.long, device=q.device)
            buf_v[rows, rank], buf_i[rows, rank] = v, j
            best, pos = buf_v.view(stop - start, width * k).topk(k, dim=1)
            vals[i + start:i + stop] = best
            idx[i + start:i + stop] = buf_i.view(stop - start, width * k).gather(1, pos)
            start = stop
    return vals, idx


def _scan_cells(q: torch.Tensor, qi: torch.Tensor, cell: torch.Tensor, bank: torch.Tensor, offsets: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every (query ``qi``, cell ``cell``) pair: the k best similarities inside that cell and their bank
    indices, (P, k), padded with −inf / −1 when the cell holds fewer than k vectors."""
    order = torch.argsort(cell, stable=True)
    q_sorted = q[qi[order]]
    counts = torch.bincount(cell, minlength=offsets.shape[0] - 1).tolist()
    starts = offsets[:-1].tolist()
    sizes = (offsets[1:] - offsets[:-1]).tolist()
    part_v, part_i = [], []
    pos = 0
    for c, cnt in enumerate(counts):  # one product per probed cell (faiss scans its lists the same way)
        if cnt == 0:
            continue
        qs = q_sorted[pos:pos + cnt]
        pos += cnt
        kk = min(k, sizes[c])
        if kk == 0:
            part_v.append(qs.new_full((cnt, k), -math.inf))
            part_i.append(torch.full((cnt, k), -1, dtype=torch.long, device=q.device))
            continue
        v, j = (qs @ bank[starts[c]:starts[c] + sizes[c]].T).topk(kk, dim=1)
        part_v.append(F.pad(v, (0, k - kk), value=-math.inf))
        part_i.append(F.pad(j + starts[c], (0, k - kk), value=-1))
    out_v = torch.empty(cell.shape[0], k, dtype=q.dtype, device=q.device)
    out_i = torch.empty(cell.shape[0], k, dtype=torch.long, device=q.device)
    if part_v:
        out_v[order] = torch.cat(part_v)
        out_i[order] = torch.cat(part_i)
    return out_v, out_i


def calibrate_margin(bank: torch.Tensor, centroids: torch.Tensor, cells: torch.Tensor, k: int, target: float,
                     seed: int) -> tuple[float, float]:
    """Smallest centroid-similarity margin whose recall@k on held-in training queries (each excluding itself)
    reaches ``target``, and that recall. A true neighbour is found exactly when the similarity of the query to
    its cell's centroid is within the margin of the query's best centroid, so the margin is a quantile of those
    gaps, read off one exact search."""
    m = bank.shape[0]
    k_eff = min(k, m - 1)
    if k_eff < 1:
        return math.inf, 1.0
    g = torch.Generator().manual_seed(seed + 1)
    who = torch.randperm(m, generator=g)[: min(m, _CALIBRATION_QUERIES)].to(bank.device)
    _, nn = exact_topk(bank[who], bank, k_eff + 1)
    is_self = nn == who[:, None]
    keep = ~is_self
    keep[:, -1] &= is_self.any(1)  # no self among the k+1: drop the last instead
    nn = nn[keep].view(who.shape[0], k_eff)
    cs = bank[who] @ centroids.T
    gaps = (cs.amax(1, keepdim=True) - cs.gather(1, cells[nn])).flatten().sort().values
    j = min(gaps.numel() - 1, max(0, math.ceil(target * gaps.numel()) - 1))
    margin = float(gaps[j]) + 1e-6
    return margin, float((gaps <= margin).to(torch.float64).mean())


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

    def __init__(self, k: int = 50, sample_ratio: float = 1.0, search: str = "exact", nlist: int | None = None,
                 nprobe: int | None = None, target_recall: float = 0.99, backend: str = "auto", seed: int = 0,
                 features: str = "features"):
        self.k = k
        self.sample_ratio = sample_ratio
        self.search = search
        self.nlist = nlist
        self.nprobe = nprobe
        self.target_recall = target_recall
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
        if self.search not in ("exact", "ivf"):
            raise OODLensError(f"KNN search must be 'exact' or 'ivf', got {self.search!r}")
        if self.backend not in ("auto", "torch", "faiss"):
            raise OODLensError(f"KNN backend must be 'auto', 'torch' or 'faiss', got {self.backend!r}")
        for name in ("nlist", "nprobe"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise OODLensError(f"KNN {name} must be a positive integer or None, got {v!r}")
        if not 0 < self.target_recall <= 1:
            raise OODLensError(f"KNN target_recall must be in (0, 1], got {self.target_recall!r}")

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
        self._index_cache = None
        if self.search == "exact":
            self.bank_ = bank.contiguous()
            if self._use_faiss(bank.device):
                self._faiss_index(False)  # built at fit, so scoring times only the search
            return
        nlist = min(self.nlist or math.ceil(2 * math.sqrt(bank.shape[0])), bank.shape[0])
        cent = spherical_kmeans(bank, nlist, self.seed)
        cells = assign_cells(bank, cent)
        order = torch.argsort(cells, stable=True)
        counts = torch.bincount(cells, minlength=nlist)
        self.bank_ = bank[order].contiguous()
        self.centroids_ = cent
        self.list_offsets_ = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        if self.nprobe is None:  # adaptive probing, capped at every cell
            self.nprobe_ = nlist
            self.margin_, self.calibration_recall_ = calibrate_margin(
                self.bank_, cent, cells[order], self.k, self.target_recall, self.seed)
        else:
            self.nprobe_, self.margin_, self.calibration_recall_ = min(self.nprobe, nlist), None, None
            if self._use_faiss(bank.device):
                self._faiss_index(True)

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
        """(similarities, bank indices) of the k nearest training features, (N, k) each, best first; for the
        IVF search a row may hold −inf / −1 where its probed cells had fewer than k vectors."""
        x = self._check_features(x, "features to score")
        self._move_state(x[self.features].device)
        q = F.normalize(as_float(x[self.features]).float(), dim=1)
        return self._search(q)

    def _search(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.k
        if not 1 <= k <= self.bank_.shape[0]:
            raise OODLensError(f"KNN k={k} but the training bank holds {self.bank_.shape[0]} vectors")
        ivf = hasattr(self, "centroids_")
        if self._use_faiss(q.device) and not (ivf and self.margin_ is not None):
            index = self._faiss_index(ivf)
            v, i = index.search(q.contiguous().numpy(), k)
            return torch.from_numpy(v), torch.from_numpy(i).long()
        if ivf:
            return ivf_topk(q, self.bank_, self.centroids_, self.list_offsets_, k, self.nprobe_, self.margin_)
        return exact_topk(q, self.bank_, k)

    def _faiss_index(self, ivf: bool):
        cache = getattr(self, "_index_cache", None)
        if cache is not None and cache[0] == ivf:
            return cache[1]
        faiss = _faiss()
        d = self.bank_.shape[1]
        if ivf:
            quantizer = faiss.IndexFlatIP(d)
            quantizer.add(self.centroids_.cpu().contiguous().numpy())
            index = faiss.IndexIVFFlat(quantizer, d, self.centroids_.shape[0], faiss.METRIC_INNER_PRODUCT)
            index.is_trained = True
            index.add(self.bank_.cpu().numpy())
            index.nprobe = self.nprobe_
        else:
            quantizer = None
            index = faiss.IndexFlatIP(d)
            index.add(self.bank_.cpu().numpy())
        self._index_cache = (ivf, index, quantizer)  # the quantizer must outlive the index
        return index

    def _score(self, x) -> torch.Tensor:
        q = F.normalize(as_float(x[self.features]).float(), dim=1)
        _, idx = self._search(q)
        kth = idx[:, self.k - 1]
        missing = kth < 0
        if bool(missing.any()):  # IVF: probed cells held fewer than k vectors -> exact search for those rows
            kth = kth.clone()
            kth[missing] = exact_topk(q[missing], self.bank_, self.k)[1][:, -1]
        return torch.linalg.vector_norm(q - self.bank_[kth], dim=1)
