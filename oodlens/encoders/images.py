"""Images in, normalised tensors out: a folder (class sub-folders give labels), file paths, PIL images, HxWx3
arrays or an already-preprocessed (N, 3, H, W) tensor. The default transform is the ImageNet evaluation one
(resize the short side to 256, centre-crop 224, normalise with ImageNet's mean and std), written in torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import OODLensError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_folder(root: str | os.PathLike) -> tuple[list[Path], torch.Tensor | None, list[str]]:
    """Image files under ``root`` (sorted). With class sub-folders (``root/<class>/...``) also their labels and the
    class names; images directly in ``root`` have no labels."""
    root = Path(root)
    if not root.is_dir():
        raise OODLensError(f"{root} is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((root / c).rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(i)
    top = sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if top and files:
        raise OODLensError(f"{root} mixes images and class sub-folders; use one layout")
    if not files and not top:
        raise OODLensError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    if top:
        return top, None, []
    return files, torch.tensor(labels), classes


def to_array(img: Any) -> np.ndarray:
    """HxWx3 uint8/float array from a path, a PIL image or an array (grey images repeated to 3 channels)."""
    if isinstance(img, (str, os.PathLike)):
        from PIL import Image

        try:
            with Image.open(img) as im:
                img = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise OODLensError(f"cannot read image {img}: {e}") from None
    elif hasattr(img, "convert") and hasattr(img, "size"):  # PIL image
        img = np.asarray(img.convert("RGB"))
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise OODLensError(f"an image must be HxWx3 (or greyscale HxW), got shape {a.shape}")
    return a[..., :3]


def imagenet_transform(size: int = 224, resize: int = 256, mean: Sequence[float] = IMAGENET_MEAN,
                       std: Sequence[float] = IMAGENET_STD) -> Callable[[Any], torch.Tensor]:
    """Image → (3, size, size) float tensor: short side to ``resize`` (bilinear, antialiased), centre crop, normalise."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)

    def transform(img: Any) -> torch.Tensor:
        a = to_array(img)
        t = torch.tensor(a).permute(2, 0, 1).float()  # a copy: arrays may be read-only
        if a.dtype == np.uint8:
            t = t / 255.0
        h, w = t.shape[1:]
        scale = resize / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        t = torch.nn.functional.interpolate(t[None], size=(nh, nw), mode="bilinear", antialias=True,
                                            align_corners=False)[0]
        top, left = (nh - size) // 2, (nw - size) // 2
        return (t[:, top:top + size, left:left + size] - m) / s

    return transform


def as_image_list(images: Any) -> tuple[Sequence[Any], torch.Tensor | None]:
    """(items, labels): a folder gives its files (and labels); a tensor (N, 3, H, W) is kept; lists pass through."""
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        files, labels, _ = image_folder(images)
        return files, labels
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise OODLensError(f"an image tensor must be (N, 3, H, W), got {tuple(images.shape)}")
        return images, None
    if isinstance(images, (str, os.PathLike)):
        raise OODLensError(f"{images} is not a folder of images")
    items = list(images)
    if not items:
        raise OODLensError("images are empty: nothing to encode")
    return items, None


def stack(items: Sequence[Any], transform: Callable[[Any], torch.Tensor] | None) -> torch.Tensor:
    """A batch tensor: a tensor slice as is, other items through ``transform``."""
    if isinstance(items, torch.Tensor):
        return items
    if transform is None:
        raise OODLensError("images that are not a preprocessed tensor need a transform")
    return torch.stack([transform(i) for i in items])
