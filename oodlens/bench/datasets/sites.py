"""A simulated multi-site imaging study from scikit-learn's digits (nothing downloaded).

Each digit image is one "patient"; a site images it through its own acquisition model, with per-image parameters
drawn from the site's ranges (scanners and protocols vary within a site too):

    x = up_16( down_r( blur_σ( gain · u^γ ) ) ) + noise_η,   clipped to [0, 1]

where ``u`` is the digit upsampled to 16×16 (bilinear), ``γ`` the contrast curve, ``σ`` the point-spread width,
``r`` the acquisition resolution (16 pixels, or 6 for low-resolution images, which lose detail) and ``η`` the noise
level. Models see the images resized to 8×8 (:func:`model_input`), like a pipeline's fixed input size.

* Sites **A** and **B** (training sites) cover overlapping ranges; site **C** (new, unseen at training) has higher
  γ, more blur, more noise and only low resolution — inside the tail of B's ranges, so weighting can reach it.
* ID = digits 0–5; **semantic OOD** = digits 6–9, imaged at every site (only ever test data).
* Patients (digit images) are split between sites, never shared: A and B get training and held-out images,
  C only held-out images (the demo draws from them a few hundred unlabelled images and a test set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import OODLensError
from .shifts import gaussian_blur

ID_CLASSES = (0, 1, 2, 3, 4, 5)
SIZE = 16
LOW_RES = 6


@dataclass(frozen=True)
class Site:
    """Ranges (low, high) of the per-image acquisition parameters, and the share of low-resolution images."""

    name: str
    gamma: tuple[float, float]
    gain: tuple[float, float]
    blur: tuple[float, float]
    noise: tuple[float, float]
    low_res: float  # probability that an image is acquired at LOW_RES × LOW_RES

    def acquire(self, digits: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Image ``digits`` (N, 1, 8, 8) in [0, 1] through this site: (N, 1, 16, 16) in [0, 1]."""
        n = digits.shape[0]
        draw = lambda lo_hi: torch.from_numpy(rng.uniform(*lo_hi, size=n).astype(np.float32))  # noqa: E731
        gamma, gain, sigma, eta = draw(self.gamma), draw(self.gain), draw(self.blur), draw(self.noise)
        low = torch.from_numpy(rng.random(n) < self.low_res)
        u = F.interpolate(digits, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
        x = gain[:, None, None, None] * u.pow(gamma[:, None, None, None])
        x = _blur_per_image(x, sigma)
        small = F.interpolate(F.adaptive_avg_pool2d(x, LOW_RES), size=(SIZE, SIZE), mode="bilinear",
                              align_corners=False)
        x = torch.where(low[:, None, None, None], small, x)
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        x = x + eta[:, None, None, None] * torch.randn(x.shape, generator=g)
        return x.clamp(0.0, 1.0)


def _blur_per_image(x: torch.Tensor, sigma: torch.Tensor, levels: int = 6) -> torch.Tensor:
    """Gaussian blur with a per-image σ: the batch is blurred at ``levels`` σ values spanning the range and each
    image takes its nearest level (one convolution per level, not per image)."""
    lo, hi = float(sigma.min()), float(sigma.max())
    grid = torch.linspace(lo, hi, levels) if hi > lo else torch.tensor([lo])
    nearest = (sigma[:, None] - grid[None, :]).abs().argmin(1)
    out = torch.empty_like(x)
    for j, s in enumerate(grid.tolist()):
        rows = nearest == j
        if bool(rows.any()):
            out[rows] = gaussian_blur(x[rows], max(s, 1e-3))
    return out


SITES = {
    "A": Site("A", gamma=(0.6, 1.2), gain=(0.9, 1.1), blur=(0.3, 0.8), noise=(0.02, 0.08), low_res=0.0),
    "B": Site("B", gamma=(0.9, 1.9), gain=(0.75, 1.0), blur=(0.5, 1.3), noise=(0.05, 0.16), low_res=0.5),
    "C": Site("C", gamma=(1.3, 2.0), gain=(0.72, 0.9), blur=(0.9, 1.4), noise=(0.10, 0.18), low_res=0.9),
}
#: patients (ID digit images) per site, and how many of A's and B's go to training
PATIENTS = {"A": 400, "B": 400, "C": 280}
TRAIN_PER_SITE = 220


@dataclass
class SitesStudy:
    """Images per (site, split) with labels: splits ``train`` (A, B), ``held`` (ID, every site), ``ood``
    (digits 6–9, every site)."""

    images: dict[tuple[str, str], torch.Tensor]
    labels: dict[tuple[str, str], torch.Tensor]
    sites: dict[str, Site]


def load_sites_study(seed: int = 0) -> SitesStudy:
    """Render the study deterministically for ``seed`` (about a second)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    rng = np.random.default_rng(seed)
    id_idx = rng.permutation(np.flatnonzero(np.isin(d.target, ID_CLASSES)))
    ood_idx = rng.permutation(np.flatnonzero(~np.isin(d.target, ID_CLASSES)))
    need = sum(PATIENTS.values())
    if need > len(id_idx):
        raise OODLensError(f"the study needs {need} ID digit images, scikit-learn has {len(id_idx)}")
    images, labels = {}, {}
    start, ood_parts = 0, np.array_split(ood_idx, len(SITES))
    for (name, site), ood_part in zip(SITES.items(), ood_parts):
        patients = id_idx[start:start + PATIENTS[name]]
        start += PATIENTS[name]
        n_train = TRAIN_PER_SITE if name in ("A", "B") else 0
        for split, idx in (("train", patients[:n_train]), ("held", patients[n_train:]), ("ood", ood_part)):
            if len(idx):
                t = torch.from_numpy(idx)
                images[(name, split)] = site.acquire(x[t], rng)
                labels[(name, split)] = y[t]
    return SitesStudy(images, labels, dict(SITES))


def model_input(images: torch.Tensor) -> torch.Tensor:
    """What the model sees: the 16×16 acquisitions resized to 8×8 (2×2 means)."""
    return F.avg_pool2d(images, 2)


__all__ = ["model_input", "ID_CLASSES", "PATIENTS", "SITES", "Site", "SitesStudy", "load_sites_study"]
