"""Weights of any ``nn.Module`` to and from safetensors (never pickle), with JSON metadata, validated on load."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import OODLensError
from ..safetensors_io import load_tensors, read_header, save_tensors

META_KEY = "oodlens_training"


def save_checkpoint(module: nn.Module, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``module.state_dict()`` to ``path`` (safetensors) with ``metadata`` (JSON-serialisable) in the header."""
    try:
        meta = json.dumps(dict(metadata or {}), default=str)
    except (TypeError, ValueError) as e:
        raise OODLensError(f"checkpoint metadata is not JSON-serialisable: {e}") from e
    save_tensors(module.state_dict(), path, {META_KEY: meta})


def load_checkpoint(module: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load weights saved by :func:`save_checkpoint` into ``module``; return the metadata.

    Every tensor name, shape and dtype is checked against the module first: a mismatch raises one error naming
    the file and the field."""
    if not os.path.isfile(path):
        raise OODLensError(f"checkpoint {path} does not exist")
    try:
        header, _ = read_header(path)
    except (ValueError, UnicodeDecodeError) as e:  # OODLensError is a ValueError too
        raise OODLensError(f"checkpoint {path} is not a readable safetensors file ({e})") from e
    meta_raw = (header.get("__metadata__") or {}).get(META_KEY)
    if meta_raw is None:
        raise OODLensError(f"{path}: not an oodlens training checkpoint (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(meta_raw)
    except ValueError as e:
        raise OODLensError(f"{path}: metadata '{META_KEY}' is not valid JSON ({e})") from e
    expected = module.state_dict()
    stored = {k for k in header if k != "__metadata__"}
    missing, extra = sorted(set(expected) - stored), sorted(stored - set(expected))
    if missing or extra:
        raise OODLensError(f"{path}: tensors do not match the model (missing {missing[:5]}, unexpected {extra[:5]})")
    tensors, _ = load_tensors(path, mmap=False)
    for k, t in expected.items():
        if tuple(tensors[k].shape) != tuple(t.shape):
            raise OODLensError(f"{path}: tensor {k!r} has shape {tuple(tensors[k].shape)}, the model expects {tuple(t.shape)}")
        if tensors[k].dtype != t.dtype:
            raise OODLensError(f"{path}: tensor {k!r} has dtype {tensors[k].dtype}, the model expects {t.dtype}")
        if tensors[k].is_floating_point() and not bool(torch.isfinite(tensors[k]).all()):
            raise OODLensError(f"{path}: tensor {k!r} holds NaN or infinity")
    module.load_state_dict({k: tensors[k] for k in expected})
    return meta
