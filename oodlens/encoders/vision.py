"""Image classifiers as feature sources: any torch classifier (torchvision's, our plain-torch MobileNetV2, your
own), timm models. Each call gives :class:`~oodlens.Features` with ``features`` (N, D) — the input of the last
linear layer, i.e. the pooled penultimate features — and ``logits`` (N, C).

>>> feats = classifier_features(mobilenet_v2("packaged"), "photos/")            # folder, paths, PIL or (N,3,H,W)
>>> feats = torchvision_model("resnet50", "photos/", weights="resnet50-0676ba61.pth")
>>> feats = timm_model("vit_small_patch16_224", "photos/", weights="model.safetensors")
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import nn

from ..errors import OODLensError
from ..features import Features
from ._common import OFFLINE_HINT, device_of, require, run_batches
from .images import as_image_list, imagenet_transform, stack
from .mobilenet import load_weights


def last_linear(model: nn.Module) -> nn.Module:
    """The last ``nn.Linear`` registered in ``model`` (the classification head of torchvision / timm CNNs)."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not found:
        raise OODLensError(f"{type(model).__name__} has no nn.Linear head; name the layers with oodlens.extract instead")
    return found[-1]


def classifier_features(model: nn.Module, images: Any, transform: Callable[[Any], torch.Tensor] | None = None,
                        batch_size: int = 32, device: str | torch.device | None = None, progress: bool = True,
                        head: nn.Module | None = None) -> Features:
    """Run an image classifier over ``images``: ``logits`` = its output, ``features`` = the input of ``head``
    (default: its last ``nn.Linear``). ``transform`` defaults to the ImageNet evaluation transform."""
    if not isinstance(model, nn.Module):
        raise OODLensError(f"model must be a torch nn.Module (an image classifier), got {type(model).__name__}")
    items, _ = as_image_list(images)
    dev = device_of(device, model)
    model = model.to(dev).eval()
    head = head if head is not None else last_linear(model)
    tf = transform or imagenet_transform()
    seen: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].flatten(1)))

    def run(chunk: Any) -> dict[str, torch.Tensor]:
        seen.clear()
        x = stack(chunk, tf).to(dev)
        try:
            logits = model(x)
        except RuntimeError as e:
            if isinstance(e, torch.cuda.OutOfMemoryError):
                raise
            raise OODLensError(f"{type(model).__name__} failed on images of shape {tuple(x.shape)} (after the "
                               f"transform): {e}") from e
        if not seen:
            raise OODLensError("the head layer did not run in forward(); pass head=<the classifier's last layer>")
        return {"features": seen[-1], "logits": logits}

    try:
        return run_batches(items, run, batch_size, progress, "classifier")
    finally:
        handle.remove()


def load_torchvision(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """``torchvision.models.get_model(name)`` with weights from a local checkpoint (``torch.load(weights_only=True)``,
    every key checked; torchvision's weight URLs are not contacted)."""
    tv = require("torchvision")
    try:
        net = tv.models.get_model(name, weights=None)
    except (ValueError, KeyError) as e:
        raise OODLensError(f"torchvision has no model {name!r}: {e}") from None
    return load_weights(net, weights) if weights is not None else net.eval()


def torchvision_model(name: str, images: Any, weights: str | os.PathLike | None = None, **kwargs: Any) -> Features:
    """A torchvision classification model by name (``resnet50``, ``vit_b_16``, ...), weights from a local file."""
    return classifier_features(load_torchvision(name, weights), images, **kwargs)


def load_timm(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """``timm.create_model(name)`` with weights from a local file (``.safetensors`` / ``.bin`` / ``.pth``)."""
    timm = require("timm")
    overlay = {"file": str(weights)} if weights is not None else None
    try:
        return timm.create_model(name, pretrained=weights is not None, pretrained_cfg_overlay=overlay).eval()
    except (RuntimeError, OSError, ValueError) as e:
        raise OODLensError(f"cannot build timm model {name!r}: {e} ({OFFLINE_HINT})") from None


def timm_model(model: Any, images: Any, weights: str | os.PathLike | None = None, batch_size: int = 32,
               device: str | torch.device | None = None, progress: bool = True) -> Features:
    """A timm model (instance or name): ``features`` = ``forward_head(forward_features(x), pre_logits=True)``,
    ``logits`` = the head's output; the transform uses the model's own input size, mean and std."""
    net = load_timm(model, weights) if isinstance(model, str) else model.eval()
    cfg = getattr(net, "pretrained_cfg", None) or {}
    size = int((cfg.get("input_size") or (3, 224, 224))[-1])
    tf = imagenet_transform(size, round(size / float(cfg.get("crop_pct", 0.875))),
                            cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225)))
    items, _ = as_image_list(images)
    dev = device_of(device, net)
    net = net.to(dev)

    def run(chunk: Any) -> dict[str, torch.Tensor]:
        body = net.forward_features(stack(chunk, tf).to(dev))
        pre = net.forward_head(body, pre_logits=True)
        return {"features": pre, "logits": net.forward_head(body)}

    return run_batches(items, run, batch_size, progress, "timm")
