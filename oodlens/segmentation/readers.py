"""Readers for the common anomaly-segmentation folder layouts (nothing is downloaded; point them at a copy).

All readers yield :class:`Frame` objects with the image (3, H, W) float in [0, 1] and the evaluation labels
(H, W) uint8: 0 normal, 1 anomaly, 255 ignore — SegmentMeIfYouCan's convention.

* :func:`read_pairs` — images and label PNGs matched by file name (:class:`Layout`); as
  ``road-anomaly-benchmark`` does, label ids in ``normal_ids`` → 0, in ``anomaly_ids`` → 1, any other id → 255
  (ignore). Presets (:data:`LAYOUTS`):

  - ``fishyscapes`` (Fishyscapes Lost & Found / Static): ``images/<name>.png``, ``labels/<name>.png``,
    0 normal, 1 anomaly, 255 void;
  - ``smiyc`` (SegmentMeIfYouCan anomaly / obstacle tracks): ``images/<name>.*``,
    ``labels_masks/<name>_labels_semantic.png``, 0 normal, 1 anomaly, 255 void;
  - ``lostandfound`` (the original Lost-and-Found): ``leftImg8bit/<split>/<scene>/<name>_leftImg8bit.png`` and
    ``gtCoarse/<split>/<scene>/<name>_gtCoarse_labelIds.png``, 1 road (normal), 2–200 obstacles (anomaly),
    0 ignore — the reference's ``LAF_CLASSES``;
  - ``roadanomaly`` (RoadAnomaly, Lis et al. 2019): ``frames/<name>.jpg`` with
    ``frames/<name>.labels/labels_semantic.png``, 0 normal, 2 anomaly.
* :func:`read_streethazards` — StreetHazards (Hendrycks et al., 2022): ``images/<split>/...png`` and
  ``annotations/<split>/...png`` (same relative path) with raw ids 1–14; the reference code subtracts 1 and
  takes class 13 as the anomaly (``OOD.out_labels = 13``), so raw 14 → anomaly; raw 0 (−1 there, its loss's
  ignore index) → ignore; every other id (including raw 1, "unlabeled") → normal, as the reference evaluates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import OODLensError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Frame:
    name: str
    image: torch.Tensor  # (3, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (H, W) uint8: 0 normal, 1 anomaly, 255 ignore


@dataclass(frozen=True)
class Layout:
    """Where images and labels are: ``images`` and ``labels`` folders (relative to the root); an image
    ``<dir>/<stem><image_suffix>.<ext>`` (``dir`` relative to the images folder, searched recursively when
    ``recursive``) has the label ``<labels>/<dir>/`` + ``label_name.format(stem=stem)``."""

    images: str
    labels: str
    label_name: str
    normal_ids: tuple[int, ...]
    anomaly_ids: tuple[int, ...]
    image_suffix: str = ""
    recursive: bool = False


LAYOUTS = {
    "fishyscapes": Layout("images", "labels", "{stem}.png", (0,), (1,)),
    "smiyc": Layout("images", "labels_masks", "{stem}_labels_semantic.png", (0,), (1,)),
    "lostandfound": Layout("leftImg8bit", "gtCoarse", "{stem}_gtCoarse_labelIds.png", (1,), tuple(range(2, 201)),
                           image_suffix="_leftImg8bit", recursive=True),
    "roadanomaly": Layout("frames", "frames", "{stem}.labels/labels_semantic.png", (0,), (2,)),
}


def _read_png(path: Path, what: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im)  # a writable copy
    except Exception as e:
        raise OODLensError(f"cannot read {what} {path}: {e}") from e


def map_labels(raw: np.ndarray, normal_ids: Sequence[int], anomaly_ids: Sequence[int], path: Path | str = ""
               ) -> torch.Tensor:
    """Raw label ids (H, W) -> 0 (normal) / 1 (anomaly) / 255 (every other id: ignore), uint8."""
    if raw.ndim == 3:  # a colour-coded or RGBA label PNG: the first channel holds the id
        raw = raw[..., 0]
    if raw.ndim != 2:
        raise OODLensError(f"label image {path} must be (H, W), got shape {raw.shape}")
    out = np.full(raw.shape, 255, dtype=np.uint8)
    out[np.isin(raw, list(normal_ids))] = 0
    out[np.isin(raw, list(anomaly_ids))] = 1
    return torch.from_numpy(out)


def _image(path: Path) -> torch.Tensor:
    a = _read_png(path, "image")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] < 3:
        raise OODLensError(f"image {path} must be (H, W, 3), got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1).float() / 255.0


def read_pairs(root: str | os.PathLike, layout: str | Layout = "fishyscapes") -> Iterator[Frame]:
    """Frames of a folder data set (sorted by path); every image needs its label file."""
    lay = LAYOUTS.get(layout) if isinstance(layout, str) else layout
    if lay is None:
        raise OODLensError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)} (or pass a Layout)")
    root = Path(root)
    img_dir = root / lay.images
    if not img_dir.is_dir():
        raise OODLensError(f"{img_dir} is not a folder (expected the {lay.images!r} folder of the data set)")
    found = img_dir.rglob("*") if lay.recursive else img_dir.iterdir()
    files = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and p.stem.endswith(lay.image_suffix))
    if not files:
        raise OODLensError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}")
    for f in files:
        stem = f.stem[:len(f.stem) - len(lay.image_suffix)] if lay.image_suffix else f.stem
        rel_dir = f.parent.relative_to(img_dir)
        label = root / lay.labels / rel_dir / lay.label_name.format(stem=stem)
        if not label.is_file():
            raise OODLensError(f"no label file for {f.name}: expected {label}")
        image, raw = _image(f), _read_png(label, "label image")
        lab = map_labels(raw, lay.normal_ids, lay.anomaly_ids, label)
        if tuple(lab.shape) != tuple(image.shape[1:]):
            raise OODLensError(f"label {label} is {tuple(lab.shape)} but image {f} is {tuple(image.shape[1:])}")
        yield Frame(str(rel_dir / stem) if str(rel_dir) != "." else stem, image, lab)


#: StreetHazards' anomaly class id in the annotation PNGs (1-based; the reference code subtracts 1 → 13)
STREETHAZARDS_ANOMALY = 14
STREETHAZARDS_UNLABELED = 0


def read_streethazards(root: str | os.PathLike, split: str = "test") -> Iterator[Frame]:
    """StreetHazards frames: ``root/images/<split>/**.png`` with ``root/annotations/<split>/**.png`` (same
    relative path). Id 14 (anomaly) → 1, id 0 (unlabeled) → 255 ignore, classes 1–13 → 0."""
    root = Path(root)
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise OODLensError(f"StreetHazards needs {img_dir} and {ann_dir}")
    files = sorted(p for p in img_dir.rglob("*.png"))
    if not files:
        raise OODLensError(f"no PNG images under {img_dir}")
    for f in files:
        rel = f.relative_to(img_dir)
        label = ann_dir / rel
        if not label.is_file():
            raise OODLensError(f"no annotation for {rel}: expected {label}")
        image, raw = _image(f), _read_png(label, "annotation")
        lab = map_labels(raw, [i for i in range(256) if i not in (STREETHAZARDS_ANOMALY, STREETHAZARDS_UNLABELED)],
                         (STREETHAZARDS_ANOMALY,), label)
        if tuple(lab.shape) != tuple(image.shape[1:]):
            raise OODLensError(f"annotation {label} is {tuple(lab.shape)} but image {f} is {tuple(image.shape[1:])}")
        yield Frame(str(rel.with_suffix("")), image, lab)


def stack_frames(frames: Sequence[Frame] | Iterator[Frame]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(B, 3, H, W) images, (B, H, W) labels and names of frames of one size."""
    frames = list(frames)
    if not frames:
        raise OODLensError("no frames")
    shapes = {tuple(f.image.shape) for f in frames}
    if len(shapes) > 1:
        raise OODLensError(f"frames differ in size ({sorted(shapes)[:3]}); evaluate them one by one")
    return torch.stack([f.image for f in frames]), torch.stack([f.labels for f in frames]), [f.name for f in frames]
