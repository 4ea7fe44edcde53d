"""A multimodal benchmark from real signals: scikit-learn's handwritten digits seen by three different "sensors".

Every sample is one real 8×8 digit (pixels in [0, 1]); each sensor renders it its own way, with its own noise:

* ``camera`` (64-d): the image through a blurred, noisy camera — Gaussian blur σ = 0.7 px, additive noise σ = 0.08;
* ``profile`` (46-d): projection profiles at four angles — row sums (8), column sums (8) and both diagonal sums
  (15 + 15), divided by 8, noise σ = 0.05: a 1-D, radar- or CT-like signal that keeps no image;
* ``edges`` (64-d): the gradient magnitude (Sobel) of the image, a depth-/edge-like rendering, noise σ = 0.05.

Splits (from :func:`~oodlens.bench.datasets.digits.load_digits_splits`, the same split as the digits demo):
ID = digits 0–5 (train / validation / test), near-OOD = digits 6–9, far-OOD = 8×8 patches of ``china.jpg`` seen by
every sensor, validation OOD (learned fusion only) = patches of ``flower.jpg``. Derived from the ID test samples:

* one-sensor failures (kind ``sensor``): ``<m> blanked`` (all zeros), ``<m> noise`` (Gaussian noise with the
  sensor's per-dimension ID standard deviation), and ``misregistered`` (the camera sees one sample while the
  profile and edge sensors see another: sensors disagree);
* a covariate shift in one sensor only (kind ``covariate``): ``camera defocus`` (blur σ = 1.5 px and half the
  contrast) — the other sensors are intact, so the label is still predictable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import OODLensError
from .digits import load_digits_splits
from .shifts import gaussian_blur

SENSORS = ("camera", "profile", "edges")
SENSOR_DIMS = {"camera": 64, "profile": 46, "edges": 64}
CAMERA_BLUR, CAMERA_NOISE = 0.7, 0.08
PROFILE_NOISE, EDGE_NOISE = 0.05, 0.05
DEFOCUS_BLUR, DEFOCUS_CONTRAST = 1.5, 0.5

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0


@dataclass
class SensorData:
    """Per split, per sensor inputs ``{split: {sensor: (N, d)}}``; labels of the ID splits; kind of each test set."""

    inputs: dict[str, dict[str, torch.Tensor]]
    labels: dict[str, torch.Tensor]
    kinds: dict[str, str]


def camera_view(x: torch.Tensor, g: torch.Generator, blur: float = CAMERA_BLUR, contrast: float = 1.0) -> torch.Tensor:
    """(N, 1, 8, 8) images → (N, 64): blurred, contrast-scaled, noisy."""
    img = gaussian_blur(x, blur) * contrast
    return (img + CAMERA_NOISE * torch.randn(img.shape, generator=g)).flatten(1)


def diagonal_sums(img: torch.Tensor) -> torch.Tensor:
    """(N, 8, 8) → (N, 15) sums along the diagonals i − j = −7 … 7, by one scatter (no loop over diagonals)."""
    n, h, w = img.shape
    idx = (torch.arange(h)[:, None] - torch.arange(w)[None, :] + (w - 1)).reshape(-1)
    out = torch.zeros(n, h + w - 1, dtype=img.dtype)
    return out.index_add_(1, idx, img.reshape(n, -1))


def profile_view(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N, 1, 8, 8) → (N, 46): row, column, diagonal and anti-diagonal sums / 8, noisy."""
    img = x[:, 0]
    prof = torch.cat([img.sum(2), img.sum(1), diagonal_sums(img), diagonal_sums(img.flip(2))], 1) / 8.0
    return prof + PROFILE_NOISE * torch.randn(prof.shape, generator=g)


def edge_view(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(N, 1, 8, 8) → (N, 64): Sobel gradient magnitude, noisy."""
    k = torch.stack([_SOBEL_X, _SOBEL_X.T])[:, None].to(x.dtype)
    grad = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    mag = grad.pow(2).sum(1, keepdim=True).sqrt()
    return (mag + EDGE_NOISE * torch.randn(mag.shape, generator=g)).flatten(1)


def sense(x: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Every sensor's view of images ``x`` (N, 1, 8, 8)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise OODLensError(f"digit sensors take (N, 1, 8, 8) images, got {tuple(x.shape)}")
    return {"camera": camera_view(x, g), "profile": profile_view(x, g), "edges": edge_view(x, g)}


def load_digit_sensors(seed: int = 0, n_far: int = 400) -> SensorData:
    """The three-sensor benchmark, deterministic for ``seed`` (data split and sensor noise)."""
    splits = load_digits_splits(seed, n_far=n_far)
    g = torch.Generator().manual_seed(10_000 + seed)
    names = ("train", "val", "test", "val_ood", "digits 6-9", "photo patches")
    inputs = {name: sense(splits.inputs[name], g) for name in names}
    inputs["near-OOD"] = inputs.pop("digits 6-9")
    inputs["far-OOD"] = inputs.pop("photo patches")
    kinds = {"near-OOD": "near", "far-OOD": "far"}
    test = inputs["test"]
    std = {m: inputs["train"][m].std(0) for m in SENSORS}
    for m in SENSORS:
        inputs[f"{m} blanked"] = {**test, m: torch.zeros_like(test[m])}
        inputs[f"{m} noise"] = {**test, m: torch.randn(test[m].shape, generator=g) * std[m]}
        kinds[f"{m} blanked"] = kinds[f"{m} noise"] = "sensor"
    n = test["camera"].shape[0]
    other = (torch.arange(n) + 1 + torch.randint(0, n - 1, (n,), generator=g)) % n  # never the same sample
    inputs["misregistered"] = {"camera": test["camera"], "profile": test["profile"][other],
                               "edges": test["edges"][other]}
    kinds["misregistered"] = "sensor"
    defocus = camera_view(splits.inputs["test"], g, blur=DEFOCUS_BLUR, contrast=DEFOCUS_CONTRAST)
    inputs["camera defocus"] = {**test, "camera": defocus}
    kinds["camera defocus"] = "covariate"
    labels = {k: splits.labels[k] for k in ("train", "val", "test")}
    labels["camera defocus"] = splits.labels["test"]
    return SensorData(inputs, labels, kinds)
