"""The file of a saved detector: one safetensors file whose header holds the detector's name, its
hyper-parameters and non-tensor state as JSON, and a SHA-256 digest of every header field and state tensor, so
that an edited or corrupted file is refused before use (never pickle)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import torch

from ..errors import OODLensError
from ..safetensors_io import load_tensors, save_tensors


def write_detector_file(path: str | os.PathLike, name: str, params: Mapping[str, Any], values: Mapping[str, Any],
                        tensors: Mapping[str, torch.Tensor]) -> None:
    """Write a detector's name, hyper-parameters, JSON state ``values`` and state ``tensors`` with their digests."""
    meta = {"oodlens_detector": name, "params": json.dumps(dict(params)), "state": json.dumps(dict(values))}
    digests = {k: digest_text(v) for k, v in meta.items()}
    digests.update({f"tensor:{k}": digest_tensor(t) for k, t in tensors.items()})
    save_tensors(dict(tensors), path, {**meta, "digests": json.dumps(digests)})


def read_detector_file(path: str | os.PathLike) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """(name, hyper-parameters, JSON state, state tensors) of a saved detector, after checking the safetensors
    layout and every digest; any problem raises one :class:`OODLensError` naming the file and the field."""
    tensors, meta = load_tensors(path, mmap=False)
    if "oodlens_detector" not in meta:
        raise OODLensError(f"{path} is not a saved oodlens detector (no 'oodlens_detector' field)")
    check_digests(path, meta, tensors)
    return meta["oodlens_detector"], json_field(path, meta, "params", dict), json_field(path, meta, "state", dict), \
        tensors


def digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def digest_tensor(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (so an edited dtype, shape or value changes it)."""
    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{t.dtype}|{list(t.shape)}|".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
    return h.hexdigest()


def check_digests(path: Any, meta: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> None:
    """Every header field and tensor must match the digests ``Detector.save`` wrote."""
    digests = json_field(path, meta, "digests", dict)
    for k in ("oodlens_detector", "params", "state"):
        if k not in meta:
            raise OODLensError(f"{path}: header field {k!r} is missing")
        if digests.get(k) != digest_text(meta[k]):
            raise OODLensError(f"{path}: header field {k!r} does not match its digest: the file was edited or corrupted")
    recorded = {k[len("tensor:"):] for k in digests if k.startswith("tensor:")}
    if recorded != set(tensors):
        raise OODLensError(f"{path}: the state tensors {sorted(tensors)} differ from those recorded "
                           f"{sorted(recorded)}: the file was edited or corrupted")
    for k, t in tensors.items():
        if digests[f"tensor:{k}"] != digest_tensor(t):
            raise OODLensError(f"{path}: state tensor {k!r} does not match its digest (dtype, shape or values "
                               "were edited or corrupted)")


def json_field(path: Any, meta: Mapping[str, str], key: str, kind: type) -> Any:
    """Header field ``key`` parsed as JSON and checked to be a ``kind``."""
    if key not in meta:
        raise OODLensError(f"{path}: header field {key!r} is missing (not written by Detector.save, or edited)")
    try:
        value = json.loads(meta[key])
    except (json.JSONDecodeError, TypeError) as e:
        raise OODLensError(f"{path}: header field {key!r} is not valid JSON ({e})") from None
    if not isinstance(value, kind):
        raise OODLensError(f"{path}: header field {key!r} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value
