"""What the objects of the synthetic scenes (:mod:`oodlens.bench.datasets.scenes`) look like: digit glyphs from
scikit-learn's digits (different instances per split) drawn in a bright colour, and photo patches of its sample
photographs cut out by blob-shaped masks; sampled and resampled onto object coordinates in one vectorised step."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import OODLensError

KNOWN_DIGITS = (0, 1, 2, 3, 4, 5)
NEAR_DIGITS = (6, 7, 8, 9)
KNOWN, NEAR, FAR = 0, 1, 2
KIND_NAMES = {"known": KNOWN, "near": NEAR, "far": FAR}
SPLITS = ("train", "val", "test")
_INK = 0.3  # a glyph pixel belongs to the object where its bilinear ink exceeds this (ink in [0, 1])


@dataclass
class Placement:
    """One object to draw: an appearance ``patch`` (3, h, w) in [0, 1] and its ``alpha`` (h, w) (opaque where
    > 0.5), its top-left corner ``(x, y)`` in image pixels, a ``scale`` applied to the patch first, its class
    ``label`` (-1 unknown), ``kind`` (0 known, 1 near, 2 far) and ``track`` id."""

    patch: torch.Tensor
    alpha: torch.Tensor
    x: int
    y: int
    label: int
    kind: int
    scale: float = 1.0
    track: int = -1

# ----------------------------------------------------------------------------------------------- sources

@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.from_numpy((d.images / 16.0).astype(np.float32)), d.target.astype(np.int64)


@lru_cache(maxsize=3)
def _split_indices(split: str) -> dict[int, np.ndarray]:
    """Digit image indices of ``split`` per digit (fixed permutation: 60 / 20 / 20 by index)."""
    _, target = _digits()
    order = np.random.default_rng(20240607).permutation(target.shape[0])
    a, b = int(0.6 * len(order)), int(0.8 * len(order))
    idx = {"train": order[:a], "val": order[a:b], "test": order[b:]}[split]
    return {d: np.sort(idx[target[idx] == d]) for d in range(10)}


@lru_cache(maxsize=2)
def _photo(index: int) -> torch.Tensor:
    """Sample photograph ``index`` (0 china, 1 flower), downsampled 2×, as (3, h, w) in [0, 1]."""
    from sklearn.datasets import load_sample_images

    img = torch.from_numpy(load_sample_images().images[index].astype(np.float32) / 255.0).permute(2, 0, 1)
    return F.avg_pool2d(img[None], 2)[0]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise OODLensError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _bright_colours(n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 3) saturated bright colours: hue uniform, saturation in [0.5, 1], value in [0.75, 1]."""
    h, s, v = torch.rand(n, generator=g), 0.5 + 0.5 * torch.rand(n, generator=g), 0.75 + 0.25 * torch.rand(n, generator=g)
    k = (torch.tensor([5.0, 3.0, 1.0]) + 6.0 * h[:, None]) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))


def _glyphs(digits: torch.Tensor, split: str, g: torch.Generator) -> torch.Tensor:
    """One random 8×8 glyph (ink in [0, 1]) of ``split`` per requested digit: (n, 8, 8)."""
    images, _ = _digits()
    per_digit = _split_indices(split)
    out = torch.empty(digits.shape[0], dtype=torch.long)
    for d in digits.unique().tolist():
        sel = (digits == d).nonzero().flatten()
        pool = torch.from_numpy(per_digit[int(d)])
        out[sel] = pool[torch.randint(0, pool.shape[0], (sel.shape[0],), generator=g)]
    return images[out]


def _photo_crops(n: int, split: str, g: torch.Generator, side: int = 24) -> torch.Tensor:
    """(n, 3, side, side) crops of the split's photograph (china for test, flower otherwise)."""
    photo = _photo(0 if split == "test" else 1)
    _, h, w = photo.shape
    ys = torch.randint(0, h - side + 1, (n,), generator=g)
    xs = torch.randint(0, w - side + 1, (n,), generator=g)
    ar = torch.arange(side)
    rows = (ys[:, None] + ar)[:, :, None].expand(n, side, side)
    cols = (xs[:, None] + ar)[:, None, :].expand(n, side, side)
    return photo[:, rows, cols].permute(1, 0, 2, 3).contiguous()


def _blob_params(n: int, g: torch.Generator) -> torch.Tensor:
    """(n, 7) blob shape: base radius, then amplitude and phase of angular harmonics 2, 3, 4."""
    base = 0.62 + 0.18 * torch.rand(n, 1, generator=g)
    amp = 0.12 * torch.rand(n, 3, generator=g)
    phase = 2 * torch.pi * torch.rand(n, 3, generator=g)
    return torch.cat([base, amp, phase], 1)


def _blob_alpha(params: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-blob indicator at object coordinates (u, v) ∈ [-1, 1]²: r < r0 + Σ_k a_k cos(kθ + φ_k)."""
    theta = torch.atan2(v, u)
    r = torch.sqrt(u * u + v * v)
    shape = (-1,) + (1,) * (u.ndim - 1)
    radius = params[:, 0].view(shape)
    for j, k in enumerate((2, 3, 4)):
        radius = radius + params[:, 1 + j].view(shape) * torch.cos(k * theta + params[:, 4 + j].view(shape))
    return (r < radius).float()


def sample_patches(n: int, *, kinds: Sequence[str] | str = "known", size: int | tuple[int, int] = (12, 24),
                   split: str = "train", seed: int = 0) -> list[Placement]:
    """Draw ``n`` object appearances as :class:`Placement` objects at (0, 0) (set ``x``, ``y`` to place them).

    ``kinds``: a kind name (``known``, ``near``, ``far``) or one per object; ``size``: the object's side in
    pixels, or a (min, max) range drawn uniformly. Digits become bright, shaded glyphs with a hard ink mask;
    photo patches get a blob-shaped alpha.
    """
    _check_split(split)
    kinds = [kinds] * n if isinstance(kinds, str) else list(kinds)
    if len(kinds) != n or any(k not in KIND_NAMES for k in kinds):
        raise OODLensError(f"kinds must be {n} names out of {tuple(KIND_NAMES)}, got {kinds!r}")
    g = torch.Generator().manual_seed(seed)
    lo, hi = (size, size) if isinstance(size, int) else size
    sides = torch.randint(int(lo), int(hi) + 1, (n,), generator=g)
    kind = torch.tensor([KIND_NAMES[k] for k in kinds], dtype=torch.long)
    label = torch.where(kind == KNOWN, torch.randint(0, len(KNOWN_DIGITS), (n,), generator=g), -1)
    digit = torch.where(kind == NEAR, torch.randint(NEAR_DIGITS[0], NEAR_DIGITS[-1] + 1, (n,), generator=g), label)
    src = _sources(kind, digit, split, g)
    out = []
    for i in range(n):
        s = int(sides[i])
        u = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1
        vv, uu = torch.meshgrid(u, u, indexing="ij")
        colour, alpha = _appearance(src, i, uu[None], vv[None])
        out.append(Placement(colour[0], alpha[0], 0, 0, int(label[i]), int(kind[i])))
    return out


@dataclass
class _Sources:
    kind: torch.Tensor  # (M,)
    glyph: torch.Tensor  # (M, 1, 8, 8) ink (zeros for photo objects)
    crop: torch.Tensor  # (M, 3, 24, 24) photo crop (zeros for digit objects)
    colour: torch.Tensor  # (M, 3) digit colour
    blob: torch.Tensor  # (M, 7) blob parameters


def _sources(kind: torch.Tensor, digit: torch.Tensor, split: str, g: torch.Generator) -> _Sources:
    m = kind.shape[0]
    glyph = torch.zeros(m, 1, 8, 8)
    crop = torch.zeros(m, 3, 24, 24)
    is_digit = kind != FAR
    if bool(is_digit.any()):
        glyph[is_digit, 0] = _glyphs(digit[is_digit], split, g)
    n_far = int((~is_digit).sum())
    if n_far:
        crop[~is_digit] = _photo_crops(n_far, split, g)
    return _Sources(kind, glyph, crop, _bright_colours(m, g), _blob_params(m, g))


def _appearance(src: _Sources, rows: torch.Tensor | int, u: torch.Tensor, v: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour (m, 3, ...) and opacity (m, ...) of objects ``rows`` at object coordinates u, v (m, h, w)."""
    rows = torch.as_tensor(rows).reshape(-1)
    grid = torch.stack([u, v], -1)
    ink = F.grid_sample(src.glyph[rows], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    photo = F.grid_sample(src.crop[rows], grid, mode="bilinear", padding_mode="border", align_corners=False)
    far = (src.kind[rows] == FAR).view(-1, 1, 1)
    colour = torch.where(far[:, None], photo, src.colour[rows][:, :, None, None] * (0.65 + 0.35 * ink[:, None]))
    inside = (u.abs() <= 1) & (v.abs() <= 1)
    alpha = torch.where(far, _blob_alpha(src.blob[rows], u, v), (ink > _INK).float()) * inside
    return colour.clamp(0, 1), alpha
