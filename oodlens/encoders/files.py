"""``oodlens extract``: a model and data on disk → a features file that ``oodlens bench`` reads.

Data: a folder of images (class sub-folders give ``labels``), a text file with one input per line (``.txt``), or
a feature file (``.safetensors`` / ``.npy`` / ``.npz``: rows are passed through, or through a ``module:function``
model, e.g. a classifier head over stored penultimate features). The output is one safetensors file with
``features`` (and ``logits`` when the model has a head) plus ``labels`` when the data has them; ``--save-head``
also writes the classifier's last linear layer (``weight``, ``bias``) for ``head = ...`` in the bench config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import as_tensor
from ..errors import OODLensError
from ..features import Features
from ..safetensors_io import load_tensors, save_tensors
from .images import image_folder

FEATURE_SUFFIXES = (".safetensors", ".npy", ".npz")


def read_lines(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of a UTF-8 text file (one input each)."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise OODLensError(f"{path}: not UTF-8 text ({e})") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise OODLensError(f"{path}: no non-empty lines")
    return lines


def read_feature_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``, ``.npy`` (one array → ``features``) or ``.npz`` file (no pickle)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        tensors, _ = load_tensors(p, mmap=False)
        return dict(tensors)
    try:
        if p.suffix == ".npy":
            return {"features": as_tensor(np.load(p, allow_pickle=False), str(p))}
        with np.load(p, allow_pickle=False) as z:
            return {k: as_tensor(z[k], f"{p}:{k}") for k in z.files}
    except (ValueError, OSError) as e:
        raise OODLensError(f"{p}: cannot read it as a numpy file without pickle ({e})") from None


def _module_model(spec: str, weights: str | None) -> nn.Module:
    from .mobilenet import load_weights
    from .registry import _entry_point

    net = _entry_point(spec)()
    if not isinstance(net, nn.Module):
        raise OODLensError(f"{spec}() returned {type(net).__name__}, not an nn.Module")
    return load_weights(net, weights).eval() if weights else net.eval()


def extract_to_file(model: str, data: str | os.PathLike, out: str | os.PathLike, weights: str | None = None,
                    device: str | None = None, batch_size: int = 32, progress: bool = True,
                    save_head: str | os.PathLike | None = None) -> str:
    """Write ``out`` (safetensors) from ``model`` run over ``data``; returns a one-line summary."""
    from .registry import resolve_encoder

    from ._common import check_batch_size

    check_batch_size(batch_size)
    data = Path(data)
    if not data.exists():
        raise OODLensError(f"data not found: {data}")
    labels, classes, head = None, [], None
    if data.is_dir():
        kind_in = "images"
        _, labels, classes = image_folder(data)
        inputs: Any = data
    elif data.suffix.lower() in FEATURE_SUFFIXES:
        kind_in = "features"
        tensors = read_feature_file(data)
        labels = tensors.pop("labels", None)
        if model in ("-", "none"):
            feats = Features(tensors)
        else:
            if "features" not in tensors:
                raise OODLensError(f"{data} has no tensor named 'features' (it has {', '.join(tensors)})")
            net = _module_model(model, weights)
            head = next((m for m in reversed(list(net.modules())) if isinstance(m, nn.Linear)), None)
            with torch.inference_mode():
                x = tensors["features"].float()
                try:
                    logits = torch.cat([net(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
                except RuntimeError as e:
                    raise OODLensError(f"{model} failed on {data}'s features {tuple(x.shape)}: {e}") from e
            feats = Features({**tensors, "logits": logits})
    else:
        kind_in = "text"
        inputs = read_lines(data)
    if kind_in != "features":
        if model in ("-", "none"):
            raise OODLensError(f"model {model!r} only converts feature files (.safetensors / .npy / .npz); "
                               f"{data} is {kind_in}: name an encoder")
        kind, fn = resolve_encoder(model, weights, device)
        if kind not in ("any", kind_in):
            raise OODLensError(f"encoder {model!r} takes {kind}, but {data} is {kind_in}")
        feats = fn(inputs if kind_in == "text" else data, batch_size=batch_size, progress=progress)
        head = getattr(fn, "head", None)
    if save_head is not None:
        if head is None:
            raise OODLensError(f"--save-head: encoder {model!r} has no linear classifier head to save")
        bias = head.bias if head.bias is not None else torch.zeros(head.out_features)  # Linear(bias=False)
        save_tensors({"weight": head.weight.detach().float().contiguous(),
                      "bias": bias.detach().float().contiguous()}, save_head)
    tensors = {k: v.contiguous() for k, v in feats.items()}
    if labels is not None:
        if "labels" in tensors:
            raise OODLensError("the features already hold a tensor named 'labels'")
        tensors["labels"] = labels
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_tensors(tensors, out, {"oodlens": "features", "user": json.dumps({"model": model, "data": str(data),
                                                                            "classes": classes})})
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
    return f"wrote {out}: {shapes}"
