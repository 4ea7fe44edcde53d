"""CLIP-like image–text models through ``open_clip``: image embeddings (global, and local patch embeddings for
GL-MCM) and prompt embeddings for the zero-shot detectors (MCM, GL-MCM, NegLabel).

>>> model, transform, tokenizer = load_open_clip("ViT-B-16", weights="open_clip_model.safetensors")
>>> images = clip_images(model, "photos/", transform, local=True)       # features (N, D), local_features (N, P, D)
>>> prompts = clip_texts(model, tokenizer, prompt_texts(class_names))    # (K, D)
>>> create("mcm").fit(prompts=prompts).score(images)
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch

from ..errors import OODLensError
from ..features import Features
from ._common import OFFLINE_HINT, check_device, check_texts, device_of, require, run_batches
from .images import as_image_list, stack

#: the prompt template of MCM's and GL-MCM's reference code
DEFAULT_TEMPLATE = "a photo of a {}."


def prompt_texts(names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One prompt per class name (or per negative label); ``template`` holds one ``{}`` for the name."""
    names = check_texts(names)
    if not isinstance(template, str):
        raise OODLensError(f"template must be a string with one '{{}}', got {type(template).__name__}")
    try:
        probe = template.format("\x00")
    except (IndexError, KeyError, ValueError) as e:
        raise OODLensError(f"template {template!r} must hold exactly one '{{}}' for the class name ({e})") from None
    if probe.count("\x00") != 1:
        raise OODLensError(f"template {template!r} must hold exactly one '{{}}' for the class name (without it "
                           "every class gets the same prompt)")
    return [template.format(n) for n in names]


def load_open_clip(arch: str, weights: str | os.PathLike | None = None,
                   device: str | torch.device | None = None) -> tuple[Any, Callable, Any]:
    """(model, image transform, tokenizer) for an open_clip architecture, weights from a local file (None: random)."""
    oc = require("open_clip", "open_clip_torch")
    device = check_device(device)
    try:
        model, _, transform = oc.create_model_and_transforms(arch, pretrained=None if weights is None else str(weights),
                                                             device=None if device is None else str(device))
    except (RuntimeError, OSError, ValueError) as e:
        raise OODLensError(f"cannot build open_clip model {arch!r}: {e} ({OFFLINE_HINT})") from None
    return model.eval(), transform, oc.get_tokenizer(arch)


def clip_images(model: Any, images: Any, transform: Callable | None = None, local: bool = False, batch_size: int = 32,
                device: str | torch.device | None = None, progress: bool = True) -> Features:
    """``features`` (N, D) = ``encode_image``; with ``local`` also ``local_features`` (N, P, D): the patch tokens
    after the final layer norm, through the same projection (as GL-MCM's reference code), ViT models only."""
    items, _ = as_image_list(images)
    dev = device_of(device, model)
    visual = model.visual
    if local and not hasattr(visual, "output_tokens"):
        raise OODLensError("local=True needs a ViT image tower (open_clip VisionTransformer)")

    def run(chunk: Any) -> dict[str, torch.Tensor]:
        x = stack(chunk, transform).to(dev)
        if not local:
            return {"features": model.encode_image(x)}
        visual.output_tokens = True
        try:
            pooled, tokens = visual(x)
        finally:
            visual.output_tokens = False
        if getattr(visual, "proj", None) is not None:
            tokens = tokens @ visual.proj
        return {"features": pooled, "local_features": tokens}

    return run_batches(items, run, batch_size, progress, "open_clip")


def clip_texts(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 256,
               device: str | torch.device | None = None, progress: bool = False) -> torch.Tensor:
    """(K, D) text embeddings (``encode_text``) of prompts, for ``fit(prompts=...)`` of the zero-shot detectors."""
    texts = check_texts(texts)
    dev = device_of(device, model)
    out = run_batches(texts, lambda chunk: {"t": model.encode_text(tokenizer(list(chunk)).to(dev))}, batch_size,
                      progress, "prompts")
    return out["t"]
