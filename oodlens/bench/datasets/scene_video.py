"""Synthetic videos for OOD detection over time, built on the shared scene generator (:mod:`.scenes`).

Each video is one textured background with 1–2 known objects (digits 0–5) moving at constant speed from the
first frame (bouncing off the borders); with probability ``unknown_rate`` an unknown object (a near-OOD digit
6–9 or a far-OOD photo blob, as in :func:`~oodlens.bench.datasets.scenes.make_scenes`) *enters* at a random
frame in the first half of the video and then moves the same way. Every object keeps one track id over the
video (ground-truth tracks); boxes are tight around the visible pixels of each frame (an object hidden
entirely behind a later-drawn one has no box in that frame).
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import OODLensError
from .scenes import ObjectTable, Scenes, render, sample_patches, textured_backgrounds


def _tight_boxes(inst: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (m, 4) xyxy (exclusive right/bottom) of instance ids 1..m in one map, and which ids are visible."""
    h, w = inst.shape
    ids = inst.flatten().long()
    ys = torch.arange(h).repeat_interleave(w)
    xs = torch.arange(w).repeat(h)
    sel = ids > 0
    big = torch.full((m + 1,), h + w, dtype=torch.long)
    lo_x = big.clone().scatter_reduce_(0, ids[sel], xs[sel], "amin")
    lo_y = big.clone().scatter_reduce_(0, ids[sel], ys[sel], "amin")
    hi_x = torch.full((m + 1,), -1, dtype=torch.long).scatter_reduce_(0, ids[sel], xs[sel], "amax")
    hi_y = torch.full((m + 1,), -1, dtype=torch.long).scatter_reduce_(0, ids[sel], ys[sel], "amax")
    boxes = torch.stack([lo_x, lo_y, hi_x + 1, hi_y + 1], 1)[1:].float()
    return boxes, (hi_x[1:] >= 0)


def make_videos(n_videos: int, n_frames: int = 16, *, size: int = 64, seed: int = 0, split: str = "test",
                unknown_rate: float = 0.5, unknown_kinds: tuple[str, ...] = ("near", "far"),
                known_per_video: tuple[int, int] = (1, 2), speed: tuple[float, float] = (0.8, 2.0)) -> Scenes:
    """``n_videos`` videos of ``n_frames`` frames as one :class:`Scenes` (images in video-major, frame order;
    ``frame`` and ``video`` per image; ``objects.track`` = object id, unique over all videos)."""
    if n_videos < 0 or n_frames < 2:
        raise OODLensError(f"need n_videos ≥ 0 and n_frames ≥ 2, got {n_videos}, {n_frames}")
    if not 0 <= unknown_rate <= 1 or any(k not in ("near", "far") for k in unknown_kinds) or not unknown_kinds:
        raise OODLensError(f"unknown_rate must be in [0, 1] and unknown_kinds a subset of (near, far), got "
                           f"{unknown_rate}, {unknown_kinds}")
    rng = np.random.default_rng([seed, 7])
    n_known = rng.integers(known_per_video[0], known_per_video[1] + 1, n_videos)
    has_unknown = rng.random(n_videos) < unknown_rate
    kinds: list[str] = []
    video_of, enter = [], []
    for v in range(n_videos):
        kinds += ["known"] * int(n_known[v])
        video_of += [v] * int(n_known[v])
        enter += [0] * int(n_known[v])
        if has_unknown[v]:
            kinds.append(str(rng.choice(unknown_kinds)))
            video_of.append(v)
            enter.append(int(rng.integers(1, n_frames // 2 + 1)))
    m = len(kinds)
    patches = sample_patches(m, kinds=kinds, size=(max(4, size * 3 // 16), max(4, size * 3 // 8)), split=split,
                             seed=int(rng.integers(2**31))) if m else []
    sides = np.array([p.alpha.shape[0] for p in patches], dtype=np.float64)
    x0 = rng.random(m) * (size - sides)
    y0 = rng.random(m) * (size - sides)
    ang = rng.random(m) * 2 * np.pi
    sp = rng.uniform(speed[0], speed[1], m)
    vx, vy = sp * np.cos(ang), sp * np.sin(ang)
    backgrounds = textured_backgrounds(n_videos, size, seed=int(rng.integers(2**31)))
    video_of, enter = np.asarray(video_of, np.int64), np.asarray(enter, np.int64)

    def bounce(p0: np.ndarray, v: np.ndarray, t: np.ndarray, span: np.ndarray) -> np.ndarray:
        q = np.mod(p0 + v * t, 2 * span)  # reflect at 0 and span
        return np.where(q > span, 2 * span - q, q)

    images, sem, inst, frame, video = [], [], [], [], []
    rows: dict[str, list] = {"image": [], "boxes": [], "track": []}
    for v in range(n_videos):
        objs = np.flatnonzero(video_of == v)
        for f in range(n_frames):
            live = objs[enter[objs] <= f]
            t = (f - enter[live]).astype(np.float64)
            xs = bounce(x0[live], vx[live], t, size - sides[live])
            ys = bounce(y0[live], vy[live], t, size - sides[live])
            pl = []
            for j, o in enumerate(live):
                p = patches[o]
                pl.append(type(p)(p.patch, p.alpha, int(round(xs[j])), int(round(ys[j])), p.label, p.kind,
                                  track=int(o)))
            img, s, ins = render(backgrounds[v], pl)
            boxes, vis = _tight_boxes(ins, len(pl))
            k = len(images)
            images.append(img), sem.append(s), inst.append(ins), frame.append(f), video.append(v)
            vis_np = vis.numpy()
            rows["image"].append(np.full(int(vis_np.sum()), k)), rows["boxes"].append(boxes[vis])
            rows["track"].append(live[vis_np])
    h = size
    label_of = np.array([p.label for p in patches], dtype=np.int64)
    kind_of = np.array([p.kind for p in patches], dtype=np.int64)
    track = np.concatenate(rows["track"]) if rows["track"] else np.zeros(0, np.int64)
    objects = ObjectTable(torch.from_numpy(np.concatenate(rows["image"]) if rows["image"] else np.zeros(0, np.int64)),
                          torch.cat(rows["boxes"]) if rows["boxes"] else torch.zeros(0, 4),
                          torch.from_numpy(label_of[track]), torch.from_numpy(kind_of[track]),
                          torch.from_numpy(track.astype(np.int64)))
    return Scenes(torch.stack(images) if images else torch.zeros(0, 3, h, h),
                  torch.stack(sem) if sem else torch.zeros(0, h, h, dtype=torch.uint8),
                  torch.stack(inst) if inst else torch.zeros(0, h, h, dtype=torch.int32), objects,
                  torch.tensor(frame, dtype=torch.long), torch.tensor(video, dtype=torch.long))
