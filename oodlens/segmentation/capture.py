"""Run any torch segmentation model once over images and keep its logits (B, C, H, W) and, optionally, one named
layer's feature map (B, D, h, w), via :func:`oodlens.extract.extract` (forward hooks, no pooling)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OODLensError
from ..extract import extract


class SegmentationOutputs(NamedTuple):
    logits: torch.Tensor  # (B, C, H, W)
    features: torch.Tensor | None  # (B, D, h, w) of the named layer


def capture(model: nn.Module, images: Any, layer: str | None = None, output: str | None = None,
            size: tuple[int, int] | None = None, batch_size: int = 16, progress: bool = False
            ) -> SegmentationOutputs:
    """Logits and the feature map of module ``layer`` (e.g. ``"backbone.layer4"``) for ``images`` (a tensor
    (B, 3, H, W), a DataLoader or any iterable of batches, as :func:`~oodlens.extract.extract` takes).

    ``output``: which entry of a dict output holds the logits (torchvision's models return ``{"out": ...}``;
    default: ``"out"`` if present, else the model's tensor output). ``size``: resize the logits bilinearly to
    (H, W) (e.g. the label size) when the model returns them smaller."""
    layers = {layer: "__features__"} if layer is not None else None
    feats = extract(model, images, layers=layers, pool="none", batch_size=batch_size, progress=progress,
                    desc="segmentation").features
    names = [k for k in feats if k != "__features__"]
    key = output or ("out" if "out" in names else ("logits" if "logits" in names else None))
    if key not in names:
        raise OODLensError(f"cannot find the logits in the model's outputs {names}; name one with output=...")
    logits = feats[key]
    if logits.ndim != 4:
        raise OODLensError(f"the model's {key!r} output has shape {tuple(logits.shape)}; segmentation logits are "
                           "(B, C, H, W)")
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    fmap = feats["__features__"] if layer is not None else None
    if fmap is not None and fmap.ndim != 4:
        raise OODLensError(f"layer {layer!r} output has shape {tuple(fmap.shape)}; a feature map is (B, D, h, w)")
    return SegmentationOutputs(logits, fmap)
