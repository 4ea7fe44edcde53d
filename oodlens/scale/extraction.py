"""Feature extraction over a Ray Dataset: the model lives in actors (built once per actor, on a GPU when asked),
every batch of rows becomes one shard file.

    paths = extract_to_shards(ds, build_model, "feats/", layers={"pool": "features"}, workers=2)

``ds`` has a column of inputs (``input_column``, arrays of one row's input shape), optionally a ``label`` column
and an ``id`` column (global row ids; without one the ids come from a running count per worker, so shards are
unordered). ``build_model`` is a zero-argument callable returning the ``nn.Module`` (the code travels, the weights
are ``weights`` — a state dict shipped as safetensors bytes — or whatever ``build_model`` loads itself). Each actor
runs ``oodlens.extract.extract`` on its batches (same hooks, pooling and names as one process) and writes
``shard-<first id>.safetensors`` (``shards.write_shard``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import OODLensError
from ..extract import extract
from . import shards
from ._ray import actor_pool, check_map_args
from .state import tensors_bytes, tensors_from_bytes


class _ExtractWorker:
    """Ray Data actor: holds the model, turns a batch of inputs into a shard file."""

    def __init__(self, build_model: Callable[[], torch.nn.Module], weights: bytes | None, out_dir: str,
                 layers: Any, pool: Any, input_column: str, device: str | None):
        model = build_model()
        if weights is not None:
            model.load_state_dict(tensors_from_bytes(weights))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.out_dir, self.layers, self.pool, self.column = out_dir, layers, pool, input_column
        self.count = 0

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.column not in batch:
            raise OODLensError(f"the dataset has no column {self.column!r} (columns: {sorted(batch)})")
        x = torch.as_tensor(np.ascontiguousarray(batch[self.column]))
        feats, _ = extract(self.model, x, layers=self.layers, pool=self.pool, device=self.device,
                           batch_size=max(1, x.shape[0]), progress=False)
        if "id" in batch:
            ids = torch.as_tensor(np.asarray(batch["id"]), dtype=torch.int64)
        else:  # unique per worker: pid in the high bits, a running count in the low ones
            ids = torch.arange(self.count, self.count + x.shape[0]) + (os.getpid() << 32)
        self.count += x.shape[0]
        labels = torch.as_tensor(np.asarray(batch["label"]), dtype=torch.int64) if "label" in batch else None
        path = shards.write_shard(os.path.join(self.out_dir, shards.shard_name(int(ids.min()))), feats.to("cpu"),
                                  ids, labels)
        return {"path": np.array([path]), "rows": np.array([x.shape[0]])}


def extract_to_shards(ds: Any, build_model: Callable[[], torch.nn.Module], out_dir: str | os.PathLike,
                      layers: Sequence[str] | Mapping[str, str] | None = None, pool: Any = "avg",
                      weights: Mapping[str, torch.Tensor] | None = None, input_column: str = "x",
                      batch_size: int = 256, workers: int = 1, gpus_per_worker: float = 0.0,
                      device: str | None = None) -> list[str]:
    """Run the model over the Ray Dataset ``ds`` in ``workers`` actors and return the shard paths in row-id
    order. ``gpus_per_worker`` > 0 places each actor on (a share of) a GPU."""
    if not callable(build_model):
        raise OODLensError("build_model must be a zero-argument callable that returns the model")
    check_map_args(ds, batch_size, gpus_per_worker, workers)
    os.makedirs(out_dir, exist_ok=True)
    blob = tensors_bytes(dict(weights)) if weights is not None else None
    out = ds.map_batches(_ExtractWorker, fn_constructor_args=(build_model, blob, str(out_dir), layers, pool,
                                                               input_column, device),
                         batch_size=batch_size, compute=actor_pool(workers), num_gpus=gpus_per_worker or None,
                         batch_format="numpy")
    rows = out.take_all()
    return [r["path"] for r in sorted(rows, key=lambda r: r["path"])]
