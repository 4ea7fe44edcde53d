"""Fitted detectors and tensors shipped to Ray workers as safetensors bytes (never pickled objects).

``detector_bytes`` writes ``Detector.save``'s file (hyper-parameters + fitted state, safetensors + JSON) and returns
its bytes; a worker rebuilds the detector with ``detector_from_bytes`` (``Detector.load`` on those bytes), so what
travels is exactly what a saved detector holds and nothing else executes on load. ``tensors_bytes`` /
``tensors_from_bytes`` do the same for a dict of tensors (sufficient statistics, query blocks).
"""

from __future__ import annotations

import json
import os
import tempfile

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from ..detectors.base import Detector
from ..errors import OODLensError


def detector_bytes(detector: Detector) -> bytes:
    """The saved file of a fitted detector, as bytes."""
    if not detector.is_fitted:
        raise OODLensError(f"{type(detector).__name__} is not fitted; fit it before shipping it to workers")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "detector.safetensors")
        detector.save(path)
        with open(path, "rb") as f:
            return f.read()


def detector_from_bytes(data: bytes) -> Detector:
    """The detector ``detector_bytes`` wrote (any registered class)."""
    if not isinstance(data, (bytes, bytearray)):
        raise OODLensError(f"detector state must be safetensors bytes, got {type(data).__name__}")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "detector.safetensors")
        with open(path, "wb") as f:
            f.write(data)
        det = Detector.load(path)
    return det


def tensors_bytes(tensors: dict[str, torch.Tensor], meta: dict | None = None) -> bytes:
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return _st_save(cpu, metadata={"oodlens": json.dumps(meta or {})})


def tensors_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    return _st_load(bytes(data))
