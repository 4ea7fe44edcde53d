"""Synthetic scenes for object detection and semantic segmentation, from data that ships with scikit-learn.

Each scene is a textured, dark colour background with 1–3 opaque objects pasted on it (as Fishyscapes pastes
anomalies into road scenes):

* **known objects**: scikit-learn digits 0–5 (class ``k`` = digit ``k``), an 8×8 glyph upscaled to 12–24 px
  (on a 64-px image), drawn in a bright random colour shaded by the glyph's ink;
* **near-OOD objects**: digits 6–9 drawn the same way (only the shape tells them apart);
* **far-OOD objects**: patches of scikit-learn's sample photographs (``china.jpg`` for the test split,
  ``flower.jpg`` otherwise) cut out by a random blob-shaped alpha mask.

Different digit *instances* go to train / val / test: the 1 797 digit images are split 60 / 20 / 20 by index
with a fixed permutation (independent of ``seed``, so splits stay disjoint for every scene seed). Objects may
touch but never fully overlap (their squares overlap by at most 10 % of the smaller one); later objects are
drawn on top. Everything is vectorised: every object is resampled onto its own square at once with
``grid_sample`` and the scenes are composited with one ``scatter_reduce`` (2 000 64×64 scenes: 1.5 s of CPU
time on one thread, measured on a shared machine).

Label maps: ``semantic`` holds 0 for background, ``k + 1`` for known class ``k``, 254 for an anomaly (near or
far OOD object) and 255 for ignore (only where ``ignore_border > 0``: a band around every object's outline);
``instances`` holds 0 for no object, else ``1 + row`` of the object in ``objects``. Boxes are xyxy in pixel
units, tight around the object's visible pixels, with exclusive right/bottom edges (``x2 = max x + 1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import OODLensError

from .scene_objects import (FAR, KIND_NAMES, KNOWN, KNOWN_DIGITS, NEAR, NEAR_DIGITS, SPLITS,  # noqa: F401
                            Placement, _appearance, _check_split, _sources, sample_patches)  # (FAR, sample_patches: re-exported)

BACKGROUND, ANOMALY, IGNORE = 0, 254, 255
_MAX_OVERLAP = 0.10  # largest share of the smaller object's square another object's square may cover
_CHUNK = 512  # scenes rendered per block (bounds the (M, 3, H, W) object layers)


@dataclass
class ObjectTable:
    """One row per object over all images (ragged by ``image``)."""

    image: torch.Tensor  # (M,) int64 image index
    boxes: torch.Tensor  # (M, 4) float32 xyxy, tight around visible pixels, x2/y2 exclusive
    label: torch.Tensor  # (M,) int64 known class 0..5, or -1 for an unknown object
    kind: torch.Tensor  # (M,) int64 0 known, 1 near-OOD digit, 2 far-OOD photo patch
    track: torch.Tensor  # (M,) int64 track id (video) or -1

    def __len__(self) -> int:
        return int(self.image.shape[0])


@dataclass
class Scenes:
    """Images with their semantic and instance maps and the object table."""

    images: torch.Tensor  # (N, 3, H, W) float32 in [0, 1]
    semantic: torch.Tensor  # (N, H, W) uint8
    instances: torch.Tensor  # (N, H, W) int32
    objects: ObjectTable
    frame: torch.Tensor | None = None  # (N,) frame index in its video (video only)
    video: torch.Tensor | None = None  # (N,) video index (video only)

    def __len__(self) -> int:
        return int(self.images.shape[0])




# ----------------------------------------------------------------------------------------------- rendering

def textured_backgrounds(n: int, size: int | tuple[int, int] = 64, *, seed: int = 0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 3, H, W) dark textured colour backgrounds in [0, 1]: a random base colour (channels in
    [0.08, 0.40]), smooth colour noise at two scales and faint pixel noise — the same law for every split."""
    h, w = (size, size) if isinstance(size, int) else size
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    base = 0.08 + 0.32 * torch.rand(n, 3, 1, 1, generator=g)
    out = F.interpolate(0.07 * torch.randn(n, 3, 4, 4, generator=g), size=(h, w), mode="bilinear",
                        align_corners=False)
    fine = F.interpolate(torch.randn(n, 1, max(2, h // 6), max(2, w // 6), generator=g), size=(h, w),
                         mode="bilinear", align_corners=False)
    fine.add_(torch.randn(n, 1, h, w, generator=g), alpha=0.4)  # faint pixel noise
    return out.add_(base).add_(fine, alpha=0.05).clamp_(0, 1)


def _composite(background: torch.Tensor, image: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor,
               colour: torch.Tensor, alpha: torch.Tensor, semantic_id: torch.Tensor, first_row: int = 0,
               ignore_border: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw objects (sorted by image, later on top) given as local layers colour (M, 3, P, Q) and alpha
    (M, P, Q) whose top-left pixel lands at (x0, y0) of image ``image``; pixels outside the image are clipped.
    Returns images, semantic (uint8) and instances (int32, 1 + first_row + object)."""
    n, _, h, w = background.shape
    m, _, ph, pw = colour.shape
    yy = y0.long().view(-1, 1, 1) + torch.arange(ph).view(1, ph, 1)
    xx = x0.long().view(-1, 1, 1) + torch.arange(pw).view(1, 1, pw)
    keep = (alpha > 0.5) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    obj, i, j = keep.nonzero(as_tuple=True)
    flat = (image[obj] * h + yy[obj, i, 0]) * w + xx[obj, 0, j]
    top = torch.zeros(n * h * w, dtype=torch.int64).scatter_reduce_(0, flat, obj + 1, "amax")  # last drawn wins
    hwc = background.permute(0, 2, 3, 1).reshape(-1, 3).clone()
    where = top.nonzero().flatten()
    o = top[where] - 1
    py, px = (where // w) % h, where % w
    hwc[where] = colour[o, :, py - yy[o, 0, 0], px - xx[o, 0, 0]]
    images = hwc.view(n, h, w, 3).permute(0, 3, 1, 2).contiguous()
    top = top.view(n, h, w)
    table = torch.cat([torch.zeros(1, dtype=torch.uint8), semantic_id.to(torch.uint8)])
    semantic = table[top]
    if ignore_border > 0:
        k = 2 * ignore_border + 1
        t = top.float()[:, None]
        edge = (F.max_pool2d(t, k, 1, ignore_border) != -F.max_pool2d(-t, k, 1, ignore_border))[:, 0]
        semantic[edge] = IGNORE
    instances = torch.where(top > 0, top + first_row, 0).to(torch.int32)
    return images, semantic, instances


def _tight_boxes(instances: torch.Tensor, m: int) -> torch.Tensor:
    """(m, 4) xyxy boxes (x2, y2 exclusive) of the pixels of instances 1..m; NaN for an invisible object."""
    n, h, w = instances.shape
    ids = instances.reshape(-1).long()
    ys = torch.arange(h).view(1, h, 1).expand(n, h, w).reshape(-1).float()
    xs = torch.arange(w).view(1, 1, w).expand(n, h, w).reshape(-1).float()
    out = torch.full((4, m + 1), float("nan"))
    for j, (vals, how) in enumerate(((xs, "amin"), (ys, "amin"), (xs + 1, "amax"), (ys + 1, "amax"))):
        out[j].scatter_reduce_(0, ids, vals, how, include_self=False)
    return out[:, 1:].T.contiguous()


def render(background: torch.Tensor, placements: Sequence[Placement], *, ignore_border: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``placements`` (in order, later on top) over one ``background`` (3, H, W).

    Returns the image (3, H, W), semantic map (H, W) uint8 and instance map (H, W) int32, where instance
    ``i + 1`` is ``placements[i]`` (pixels of a patch falling outside the image are clipped)."""
    if background.ndim != 3 or background.shape[0] != 3:
        raise OODLensError(f"background must be (3, H, W), got shape {tuple(background.shape)}")
    _, h, w = background.shape
    m = len(placements)
    patches, alphas = [], []
    for p in placements:
        patch, a = p.patch.float(), p.alpha.float()
        if patch.ndim != 3 or patch.shape[0] != 3 or a.shape != patch.shape[1:]:
            raise OODLensError(f"a placement needs patch (3, h, w) and alpha (h, w), got {tuple(patch.shape)} "
                               f"and {tuple(a.shape)}")
        if p.scale != 1.0:
            s = (max(1, round(a.shape[0] * p.scale)), max(1, round(a.shape[1] * p.scale)))
            patch = F.interpolate(patch[None], size=s, mode="bilinear", align_corners=False)[0]
            a = F.interpolate(a[None, None], size=s, mode="nearest")[0, 0]
        patches.append(patch)
        alphas.append(a)
    ph = max((a.shape[0] for a in alphas), default=1)
    pw = max((a.shape[1] for a in alphas), default=1)
    colour = torch.zeros(m, 3, ph, pw)
    alpha = torch.zeros(m, ph, pw)
    for i, (patch, a) in enumerate(zip(patches, alphas)):
        colour[i, :, :a.shape[0], :a.shape[1]] = patch
        alpha[i, :a.shape[0], :a.shape[1]] = a
    sem = torch.tensor([p.label + 1 if p.kind == KNOWN else ANOMALY for p in placements], dtype=torch.long)
    pos = torch.tensor([[p.x, p.y] for p in placements], dtype=torch.long).view(-1, 2)
    img, semantic, inst = _composite(background[None].float(), torch.zeros(m, dtype=torch.long), pos[:, 0],
                                     pos[:, 1], colour, alpha, sem, ignore_border=ignore_border)
    return img[0], semantic[0], inst[0]


# ----------------------------------------------------------------------------------------------- layout

def _layout(n: int, size: int, obj_size: tuple[int, int], per_image: tuple[int, int], rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Object squares per image by rejection sampling: returns image, x0, y0, side (one entry per object)."""
    lo, hi = obj_size
    counts = rng.integers(per_image[0], per_image[1] + 1, n)
    tries = 30
    sides = rng.integers(lo, hi + 1, (n, per_image[1], tries))
    fx = rng.random((n, per_image[1], tries))
    fy = rng.random((n, per_image[1], tries))
    image, xs, ys, ss = [], [], [], []
    for i in range(n):
        placed: list[tuple[int, int, int]] = []
        for j in range(int(counts[i])):
            for t in range(tries):
                s = int(sides[i, j, t])
                x, y = int(fx[i, j, t] * (size - s + 1)), int(fy[i, j, t] * (size - s + 1))
                if all(max(0, min(x + s, a + c) - max(x, a)) * max(0, min(y + s, b + c) - max(y, b))
                       <= _MAX_OVERLAP * min(s, c) ** 2 for a, b, c in placed):
                    placed.append((x, y, s))
                    break
        for x, y, s in placed:
            image.append(i), xs.append(x), ys.append(y), ss.append(s)
    return (np.asarray(image, np.int64), np.asarray(xs, np.int64), np.asarray(ys, np.int64),
            np.asarray(ss, np.float32))


def make_scenes(n: int, *, size: int = 64, seed: int = 0, objects_per_image: tuple[int, int] = (1, 3),
                unknown_rate: float = 0.0, unknown_kinds: Sequence[str] = ("near", "far"), split: str = "train",
                object_size: tuple[int, int] | None = None, ignore_border: int = 0) -> Scenes:
    """``n`` scenes of ``size``×``size`` pixels, deterministic for ``seed`` and ``split``.

    Each scene holds ``objects_per_image`` (min, max) objects; each object is unknown with probability
    ``unknown_rate``, of a kind drawn uniformly from ``unknown_kinds`` (``near``: digits 6–9, ``far``: photo
    patches). ``object_size`` (min, max side in pixels) defaults to (3/16, 3/8) of ``size`` (12–24 px at 64).
    ``ignore_border`` > 0 marks a band of that many pixels around every object outline as 255 (ignore).
    """
    _check_split(split)
    if not (isinstance(n, int) and n >= 0):
        raise OODLensError(f"n must be a non-negative integer, got {n!r}")
    if not (isinstance(size, int) and size >= 16):
        raise OODLensError(f"size must be an integer >= 16, got {size!r}")
    lo_n, hi_n = objects_per_image
    if not 0 <= lo_n <= hi_n:
        raise OODLensError(f"objects_per_image must be (min, max) with 0 <= min <= max, got {objects_per_image}")
    if not 0.0 <= unknown_rate <= 1.0:
        raise OODLensError(f"unknown_rate must be in [0, 1], got {unknown_rate}")
    kinds = tuple(unknown_kinds)
    if unknown_rate > 0 and (not kinds or any(k not in ("near", "far") for k in kinds)):
        raise OODLensError(f"unknown_kinds must be a non-empty subset of ('near', 'far'), got {kinds}")
    obj = object_size if object_size is not None else (max(4, size * 3 // 16), max(4, size * 3 // 8))
    if not 2 <= obj[0] <= obj[1] <= size:
        raise OODLensError(f"object_size must be (min, max) with 2 <= min <= max <= size, got {obj}")

    salt = SPLITS.index(split)
    rng = np.random.default_rng([seed, salt, 1])
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    image, x0, y0, side = _layout(n, size, obj, (lo_n, hi_n), rng)
    m = image.shape[0]
    unknown = rng.random(m) < unknown_rate
    kind = np.where(unknown, np.asarray([KIND_NAMES[k] for k in kinds] or [NEAR])[rng.integers(0, max(1, len(kinds)), m)],
                    KNOWN).astype(np.int64)
    label = np.where(kind == KNOWN, rng.integers(0, len(KNOWN_DIGITS), m), -1).astype(np.int64)
    digit = np.where(kind == NEAR, rng.integers(NEAR_DIGITS[0], NEAR_DIGITS[-1] + 1, m), label)
    kind_t, label_t, image_t = torch.from_numpy(kind), torch.from_numpy(label), torch.from_numpy(image)
    src = _sources(kind_t, torch.from_numpy(digit), split, g)
    backgrounds = textured_backgrounds(n, size, generator=g)
    sem_id = torch.where(kind_t == KNOWN, label_t + 1, ANOMALY)

    images = torch.empty(n, 3, size, size)
    semantic = torch.empty(n, size, size, dtype=torch.uint8)
    instances = torch.empty(n, size, size, dtype=torch.int32)
    p = obj[1]
    local = torch.arange(p, dtype=torch.float32) + 0.5
    bounds = np.searchsorted(image, np.arange(0, n + _CHUNK, _CHUNK))
    for c, start in enumerate(range(0, n, _CHUNK)):
        stop = min(start + _CHUNK, n)
        r0, r1 = int(bounds[c]), int(bounds[c + 1])
        s = torch.from_numpy(side[r0:r1]).view(-1, 1, 1)
        u = (local.view(1, 1, -1) / s * 2 - 1).expand(-1, p, p)
        v = (local.view(1, -1, 1) / s * 2 - 1).expand(-1, p, p)
        colour, alpha = _appearance(src, torch.arange(r0, r1), u, v)
        out = _composite(backgrounds[start:stop], image_t[r0:r1] - start, torch.from_numpy(x0[r0:r1]),
                         torch.from_numpy(y0[r0:r1]), colour, alpha, sem_id[r0:r1], first_row=r0,
                         ignore_border=ignore_border)
        images[start:stop], semantic[start:stop], instances[start:stop] = out
    boxes = _tight_boxes(instances, m)
    objects = ObjectTable(image_t, boxes, label_t, kind_t, torch.full((m,), -1, dtype=torch.long))
    return Scenes(images, semantic, instances, objects)
