"""Covariate shifts for image batches (N, C, H, W) at severities 1–5: rotation, Gaussian noise, Gaussian blur.
Deterministic for a seed; values stay in the input's range by clamping to [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...errors import OODLensError

ROTATION_DEG = (15, 30, 45, 60, 75)
NOISE_STD = (0.08, 0.16, 0.24, 0.32, 0.40)
BLUR_SIGMA = (0.5, 0.75, 1.0, 1.25, 1.5)
SHIFTS = ("rotate", "noise", "blur")


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate each image about its centre (bilinear, zero fill)."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def apply_shift(x: torch.Tensor, shift: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``shift`` ∈ rotate / noise / blur at ``severity`` ∈ 1..5."""
    if severity not in range(1, 6):
        raise OODLensError(f"severity must be 1..5, got {severity}")
    i = severity - 1
    if shift == "rotate":
        out = rotate(x, ROTATION_DEG[i])
    elif shift == "noise":
        g = torch.Generator().manual_seed(seed * 100 + severity)
        out = x + NOISE_STD[i] * torch.randn(x.shape, generator=g, dtype=x.dtype)
    elif shift == "blur":
        out = gaussian_blur(x, BLUR_SIGMA[i])
    else:
        raise OODLensError(f"unknown shift {shift!r}; choose from {SHIFTS}")
    return out.clamp(0.0, 1.0)
