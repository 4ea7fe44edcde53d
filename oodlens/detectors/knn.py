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

* ``"ivf"`` — approximate: an inverted-file index (spherical k-means into ``cells`` cells, default ≈ 2√N; each
  query scans the ``probes`` nearest cells with exact products; ``_knn_approx.py``, torch). The k-th neighbour of a
  subset of the bank is never closer than the whole bank's, so a missed neighbour can only *raise* a score — and
  mostly OOD scores, whose neighbours are scattered over cells, while ID queries find theirs in their own cell.
  Judged by the detector's AUROC / FPR@95 against ``"exact"``, not by recall (``benchmarks/knn_approx_detector.py``).
  Applies to ``score``; ``neighbours`` stays exact. Queries whose probed cells hold fewer than k rows are searched
  exactly (counted in ``last_fallbacks``).

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
from ._knn_approx import IVFIndex, default_cells, ivf_kth
from ._knn_search import HalfBank, exact_topk, half_kth, half_topk, kth_distance, tie_safe_kth_distance
from ._neighbours import rescale_rows

#: neighbours searched beyond the k-th, so that near-tied products at the boundary are all re-ranked exactly
_TIE_MARGIN = 8
from .base import Detector

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
                 backend: str = "auto", seed: int = 0, features: str = "features", cells: int | None = None,
                 probes: int = 8):
        self.k = k
        self.sample_ratio = sample_ratio
        self.search = search
        self.candidates = candidates
        self.backend = backend
        self.seed = seed
        self.features = features
        self.cells = cells
        self.probes = probes
        self.last_fallbacks = 0

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    # -- fit ---------------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise OODLensError(f"KNN k must be a positive integer, got {self.k!r}")
        if not 0 < self.sample_ratio <= 1:
            raise OODLensError(f"KNN sample_ratio must be in (0, 1], got {self.sample_ratio!r}")
        if self.search not in ("exact", "half", "ivf"):
            raise OODLensError(f"KNN search must be 'exact', 'half' or 'ivf', got {self.search!r}")
        if isinstance(self.probes, bool) or not isinstance(self.probes, int) or self.probes < 1:
            raise OODLensError(f"KNN probes must be a positive integer (cells scanned per query), got {self.probes!r}")
        if self.backend not in ("auto", "torch", "faiss"):
            raise OODLensError(f"KNN backend must be 'auto', 'torch' or 'faiss', got {self.backend!r}")
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, (int, float)) \
                or not self.candidates >= 1:
            raise OODLensError(f"KNN candidates must be a number ≥ 1 (a multiple of k), got {self.candidates!r}")

    def _fit(self, train, labels, head, model) -> None:
        self._check_params()
        bank = F.normalize(rescale_rows(as_float(train[self.features])).float(), dim=1)
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
        if self.search == "ivf":
            cells = default_cells(bank.shape[0]) if self.cells is None else self.cells
            index = IVFIndex.build(self.bank_, cells, seed=self.seed)
            self.ivf_centroids_, self.ivf_order_, self.ivf_offsets_ = index.centroids, index.order, index.offsets

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
        q = F.normalize(rescale_rows(as_float(x[self.features])).float(), dim=1)
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
        self._check_params()
        if self.k > self.bank_.shape[0]:
            raise OODLensError(f"KNN k={self.k} but the training bank holds {self.bank_.shape[0]} vectors")
        z = rescale_rows(as_float(x[self.features])).float()  # norms that cannot overflow or underflow
        if self.search == "ivf":  # approximate: scores can only rise (see _knn_approx)
            index = IVFIndex(self.ivf_centroids_, self.ivf_order_, self.ivf_offsets_)
            lists = getattr(self, "_ivf_lists", None)
            if lists is None or lists.device != z.device or lists.shape != self.bank_.shape:
                lists = self._ivf_lists = self.bank_[self.ivf_order_].contiguous()
            _, kth, self.last_fallbacks = ivf_kth(F.normalize(z, dim=1), lists, index, self.k, self.probes,
                                                  self.bank_)
        elif self.search == "half":  # only the k-th neighbour is needed: fewer exact products
            _, kth, self.last_fallbacks = half_kth(F.normalize(z, dim=1), self.bank_,
                                                   self._prepared_half(z.device), self.k,
                                                   math.ceil(self.candidates * self.k))
        elif self._use_faiss(z.device):
            kth = self._search(F.normalize(z, dim=1))[1][:, self.k - 1]
        else:  # queries normalised block by block: no normalised copy of the whole input; a few neighbours past
            # the k-th are kept so that the k-th distance does not depend on bank order among near-tied products
            extra = min(_TIE_MARGIN, self.bank_.shape[0] - self.k)
            vals, idx = exact_topk(z, self.bank_, self.k + extra, normalise=True)
            return tie_safe_kth_distance(z, self.bank_, vals, idx, self.k)
        return kth_distance(z, self.bank_, kth)
