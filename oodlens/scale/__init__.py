"""oodlens on Ray: the same fit and score as one process, across workers and machines (optional extra ``[ray]``).

* ``extract_to_shards`` — a model held by Ray Data actors turns a Ray Dataset of inputs into sharded safetensors
  feature files;
* ``fit_shards`` — Gaussian detectors (Mahalanobis, RMDS, GMM) and principal-subspace detectors (Residual, ViM)
  fitted from sufficient statistics reduced across shards, equal to the one-process fit;
* ``score_dataset`` — any fitted detector scores a Ray Dataset (its state shipped once as safetensors bytes);
* ``ShardedKNN`` — KNN over a bank sharded across actors, per-shard top-k and an exact merge.

Ray is imported only when one of these runs; without it they raise an error with the install command.
See ``docs/scale.md``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "extract_to_shards": "extraction",
    "fit_shards": "fit",
    "shard_statistics": "fit",
    "score_dataset": "score",
    "collect_scores": "score",
    "ShardedKNN": "sharded_knn",
    "init_local": "_ray",
    "read_shard": "shards",
    "write_shard": "shards",
    "list_shards": "shards",
    "load_all": "shards",
    "detector_bytes": "state",
    "detector_from_bytes": "state",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'oodlens.scale' has no attribute {name!r}")
