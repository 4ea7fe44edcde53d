"""KNN (Sun et al., ICML 2022) over a bank sharded across Ray actors: per-shard top-k, then an exact merge.

Each actor holds the L2-normalised rows of some shard files (bank rows numbered in file order, as the one-process
fit on the same files sees them) and answers a block of queries with its own k best inner products
(``detectors._knn_search.exact_topk``, the one-process search). The union of the shards' top-k lists holds the
global top-k (every global neighbour is among its own shard's k best), so the merge — sort the S·K candidates by
similarity, ties by bank index — gives the exact top-K. As ``KNN.score`` does, K = k + 8 neighbours are kept and
each shard also returns the direct distance ‖ẑ − x‖ of its candidates (``kth_distance``: no cancellation in
2 − 2cos), so the k-th distance is chosen by the same near-tie rule (``_knn_search.tie_safe_kth_distance``:
products within 2·D·2⁻²⁴ of the k-th are ranked by their exact distance) and the scores equal the one-process
``KNN(k).fit(all rows).score(z)`` up to float32 rounding.

Traffic per query: the query (4·D bytes) to each of S shards and K (similarity, index, distance) triples (16·K bytes)
back from each, one round trip. Actors restart on failure (``max_restarts=-1``) and rebuild from their files; calls
are retried (``max_task_retries=-1``), so a killed worker changes no result.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .._checks import as_float, check_finite
from ..detectors._knn_search import exact_topk, kth_distance, kth_within_window, tie_window
from ..detectors._neighbours import rescale_rows
from ..detectors.knn import _TIE_MARGIN
from ..errors import OODLensError
from ..features import Features
from ..safetensors_io import read_header
from ._ray import raise_cause, ray
from .shards import check_widths, feature_shapes, read_shard
from .state import tensors_bytes, tensors_from_bytes


class _BankShard:
    """Ray actor: a block of bank rows (global indices offset … offset + n − 1)."""

    def __init__(self, paths: list[str], feature: str, offset: int):
        rows = [check_finite(as_float(read_shard(p, mmap=False)[0][feature]), f"feature {feature!r} of shard {p}")
                for p in paths]
        self.bank = F.normalize(rescale_rows(torch.cat(rows)).float(), dim=1).contiguous()
        self.offset = offset

    def size(self) -> int:
        return self.bank.shape[0]

    def topk(self, queries: bytes, k: int) -> bytes:
        """This shard's k best (similarity, global index, direct distance) per query, (N, k) each."""
        z = rescale_rows(tensors_from_bytes(queries)["z"])
        v, i = exact_topk(z, self.bank, min(k, self.bank.shape[0]), normalise=True)
        d = torch.stack([kth_distance(z, self.bank, i[:, j]) for j in range(i.shape[1])], 1)
        return tensors_bytes({"v": v, "i": i + self.offset, "d": d})

    def pid(self) -> int:
        return os.getpid()


class ShardedKNN:
    """KNN scores from a bank spread over ``workers`` Ray actors (shard files split in contiguous groups)."""

    def __init__(self, paths: Sequence[str | os.PathLike], k: int = 50, workers: int = 2, feature: str = "features"):
        paths = [str(p) for p in paths]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise OODLensError(f"KNN k must be a positive integer, got {k!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise OODLensError(f"workers must be a positive integer, got {workers!r}")
        shapes = check_widths(feature_shapes(paths, feature))
        if len(shapes[feature]) != 1:
            raise OODLensError(f"KNN needs a 2-D feature (N, D); shards hold per-row shape {tuple(shapes[feature])}")
        self.dim, self.k, self.feature = shapes[feature][0], k, feature
        sizes = [read_header(p)[0][feature]["shape"][0] for p in paths]
        groups = [g for g in _split(list(range(len(paths))), min(workers, len(paths))) if g]
        r = ray()
        remote = r.remote(_BankShard).options(max_restarts=-1, max_task_retries=-1)
        self.offsets, self.shards = [], []
        for g in groups:
            offset = sum(sizes[: g[0]])
            self.offsets.append(offset)
            self.shards.append(remote.remote([paths[i] for i in g], feature, offset))
        self.sizes = self._get([s.size.remote() for s in self.shards])
        self.n = sum(self.sizes)
        if k > self.n:
            raise OODLensError(f"KNN k={k} but the sharded bank holds only {self.n} vectors")

    @staticmethod
    def _get(refs: Any) -> Any:
        try:
            return ray().get(refs)
        except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; ours are unwrapped, others re-raised
            raise_cause(e)
            raise

    def _queries(self, x: Features | torch.Tensor) -> torch.Tensor:
        z = x[self.feature] if isinstance(x, (Features, dict)) else x
        z = as_float(z, f"feature {self.feature!r}").float()
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise OODLensError(f"queries have shape {tuple(z.shape)} but the sharded bank holds (N, {self.dim})")
        return check_finite(z, f"queries (feature {self.feature!r})")

    def _merged(self, z: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global top-``width`` (similarities, indices, distances), best first; equal similarities: lower index."""
        ref = ray().put(tensors_bytes({"z": z}))
        parts = [tensors_from_bytes(b) for b in self._get([s.topk.remote(ref, width) for s in self.shards])]
        v, i, d = (torch.cat([p[key] for p in parts], 1) for key in ("v", "i", "d"))
        by_index = torch.argsort(i, dim=1, stable=True)
        v, i, d = v.gather(1, by_index), i.gather(1, by_index), d.gather(1, by_index)
        order = torch.argsort(v, dim=1, descending=True, stable=True)[:, :width]
        return v.gather(1, order), i.gather(1, order), d.gather(1, order)

    def neighbours(self, x: Features | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact merged top-k: (similarities, global bank indices), (N, k) each, best first (ties: lower index)."""
        z = self._queries(x)
        if z.shape[0] == 0:
            return torch.zeros(0, self.k), torch.zeros(0, self.k, dtype=torch.long)
        v, i, _ = self._merged(z, self.k)
        return v, i

    def score(self, x: Features | torch.Tensor) -> torch.Tensor:
        """‖ẑ − ẑ_(k)‖ per query (higher = more OOD), as ``KNN.score``."""
        z = self._queries(x)
        if z.shape[0] == 0:
            return torch.zeros(0)
        width = self.k + min(_TIE_MARGIN, self.n - self.k)
        v, _, d = self._merged(z, width)
        return kth_from_candidates(v, d, self.k, z.shape[1])

    def close(self) -> None:
        for s in self.shards:
            ray().kill(s)
        self.shards = []


def kth_from_candidates(vals: torch.Tensor, dists: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """The k-th neighbour distance from the top-K candidates (similarities sorted descending, their direct distances),
    by ``tie_safe_kth_distance``'s rule: where several products lie within 2γ_D (γ_D = D·2⁻²⁴) of the k-th, the
    k-th distance is the (k − a)-th smallest distance among them, a = candidates surely above them."""
    window, above = tie_window(vals, k, dim)
    tied = kth_within_window(torch.where(window, dists, torch.full_like(dists, float("inf"))), above, k)
    return torch.where(window.sum(1) > 1, tied, dists[:, k - 1])


def _split(items: list[int], parts: int) -> list[list[int]]:
    """``items`` in ``parts`` contiguous groups of near-equal length."""
    q, r = divmod(len(items), parts)
    out, start = [], 0
    for p in range(parts):
        end = start + q + (1 if p < r else 0)
        out.append(items[start:end])
        start = end
    return out
