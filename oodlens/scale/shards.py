"""Sharded feature files: one safetensors file per block of rows, written by workers and read back anywhere.

A shard holds the named features (N, ...) of its rows, their global row ids ``_ids`` (N,) int64 and, when the data
had them, their labels ``_labels`` (N,) int64; its metadata says it is an oodlens shard and lists the feature names.
``read_shard`` validates a file before use (kind, names, N, ids), and ``check_widths`` raises one clear error when
shards disagree on a feature's width (a shard from another model or layer).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch

from ..errors import OODLensError
from ..features import Features
from ..safetensors_io import load_tensors, read_header, save_tensors

IDS, LABELS = "_ids", "_labels"


def write_shard(path: str | os.PathLike, features: Features, ids: torch.Tensor,
                labels: torch.Tensor | None = None) -> str:
    """Write one shard file (atomically: a temporary name, then a rename) and return its path."""
    if not isinstance(features, Features):
        raise OODLensError(f"features must be an oodlens Features, got {type(features).__name__}")
    ids = _integers(ids, features.n, "shard ids")
    tensors = {**dict(features), IDS: ids}
    if labels is not None:
        tensors[LABELS] = _integers(labels, features.n, "shard labels")
    if not Path(path).parent.is_dir():
        raise OODLensError(f"cannot write shard {path}: folder {Path(path).parent} does not exist")
    meta = {"oodlens": "feature-shard", "features": json.dumps(list(features.keys()))}
    tmp = f"{path}.tmp-{os.getpid()}"
    save_tensors(tensors, tmp, meta)
    os.replace(tmp, path)
    return str(path)


def _integers(x, n: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.shape != (n,):
        raise OODLensError(f"{what} must have shape ({n},), got {tuple(t.shape)}")
    if t.is_floating_point() and not bool((t == t.round()).all()):
        raise OODLensError(f"{what} must be integers")
    return t.to(torch.int64)


def read_shard(path: str | os.PathLike, mmap: bool = True) -> tuple[Features, torch.Tensor, torch.Tensor | None]:
    """(features, ids, labels or None) of one shard file, validated."""
    tensors, meta = load_tensors(path, mmap=mmap)
    if meta.get("oodlens") != "feature-shard":
        raise OODLensError(f"{path} is not an oodlens feature shard (metadata 'oodlens' is {meta.get('oodlens')!r})")
    try:
        names = json.loads(meta["features"])
    except (KeyError, ValueError) as e:
        raise OODLensError(f"{path}: shard metadata field 'features' is missing or not JSON") from e
    missing = [k for k in [*names, IDS] if k not in tensors]
    if missing:
        raise OODLensError(f"{path}: shard lacks tensors {missing}")
    feats = Features({k: tensors[k] for k in names})
    ids, labels = tensors[IDS], tensors.get(LABELS)
    for what, t in (("_ids", ids), ("_labels", labels)):
        if t is not None and t.shape != (feats.n,):
            raise OODLensError(f"{path}: field {what} has shape {tuple(t.shape)}, expected ({feats.n},)")
    return feats, ids, labels


def list_shards(folder: str | os.PathLike) -> list[str]:
    """The shard files of a folder, in name order (names carry the first row id, so this is row order)."""
    paths = sorted(str(p) for p in Path(folder).glob("shard-*.safetensors"))
    if not paths:
        raise OODLensError(f"no shard files (shard-*.safetensors) in {folder}")
    return paths


def shard_name(first_id: int) -> str:
    return f"shard-{int(first_id):012d}.safetensors"


def check_widths(shapes: Sequence[tuple[str, dict[str, list[int]]]]) -> dict[str, list[int]]:
    """The common per-row shape of every feature over shards ``[(path, {name: shape[1:]})]``; raise naming the
    first shard whose shape differs from the first shard's."""
    if not shapes:
        raise OODLensError("no shards given")
    first_path, want = shapes[0]
    for path, got in shapes[1:]:
        for name, shape in want.items():
            if name not in got:
                raise OODLensError(f"shard {path} has no feature {name!r} (shard {first_path} has)")
            if list(got[name]) != list(shape):
                raise OODLensError(f"shard {path}: feature {name!r} has per-row shape {tuple(got[name])} but shard "
                                   f"{first_path} has {tuple(shape)}: all shards must come from the same model and "
                                   "layer")
    return want


def load_all(paths: Sequence[str | os.PathLike]) -> tuple[Features, torch.Tensor, torch.Tensor | None]:
    """Every shard concatenated in row-id order, in this process (for checks and small data)."""
    parts = [read_shard(p, mmap=False) for p in paths]
    check_widths([(str(p), {k: list(v.shape[1:]) for k, v in f.items()}) for p, (f, _, _) in zip(paths, parts)])
    feats = Features.concat([f for f, _, _ in parts])
    ids = torch.cat([i for _, i, _ in parts])
    labels = None if any(y is None for _, _, y in parts) else torch.cat([y for _, _, y in parts])
    order = torch.argsort(ids)
    return feats.subset(order), ids[order], None if labels is None else labels[order]


def feature_shapes(paths: Sequence[str], feature: str) -> list[tuple[str, dict[str, list[int]]]]:
    """(path, {feature: per-row shape}) of every shard, from the headers alone."""
    out = []
    for p in paths:
        header, _ = read_header(p)
        if feature not in header:
            raise OODLensError(f"shard {p} has no feature {feature!r}")
        out.append((p, {feature: list(header[feature]["shape"][1:])}))
    return out
