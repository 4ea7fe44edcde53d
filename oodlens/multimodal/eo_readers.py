"""Readers for Earth-observation data sets as per-modality inputs for the multimodal trainer and ``extract``.

**So2Sat LCZ42** (Zhu et al., IEEE GRSM 2020): HDF5 files (``training.h5``, ``validation.h5``, ``testing.h5``,
or the culture-10 splits) holding ``sen1`` (N, 32, 32, 8) Sentinel-1 radar channels, ``sen2`` (N, 32, 32, 10)
Sentinel-2 optical bands and ``label`` (N, 17) one-hot local-climate-zone classes. :func:`read_so2sat` returns
``{"sen1": (N, 8, 32, 32), "sen2": (N, 10, 32, 32)}`` float32 (channels first) and int64 labels 0–16, reading
in row blocks so a slice of a multi-GB file never loads whole. ``h5py`` is optional (``pip install h5py``).

**AID** (Xia et al., IEEE TGRS 2017): one folder per scene class of optical images (600×600 JPEG). The reader
returns ``{"optical": (N, 3, S, S)}`` in [0, 1] resized to ``size`` and labels by the sorted class-folder names.

Typical use: ID = some classes, near-OOD = the held-out classes (as MultiOOD's near-OOD protocol), e.g.::

    x, y, names = read_so2sat("So2Sat/validation.h5")
    keep = y < 10                                  # LCZ 1-10 (built types) as ID, 11-17 (land cover) as OOD
    model = MultimodalClassifier({"sen1": conv_encoder(8), "sen2": conv_encoder(10)}, ...)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import OODLensError

SO2SAT_CLASSES = tuple(f"LCZ {i}" for i in range(1, 11)) + tuple(f"LCZ {c}" for c in "ABCDEFG")
SO2SAT_KEYS = {"sen1": 8, "sen2": 10}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise OODLensError("reading So2Sat needs h5py: pip install h5py (or pip install 'oodlens[eo]')") from e
    return h5py


def read_so2sat(path: str | os.PathLike, rows: slice | None = None, modalities: Sequence[str] = ("sen1", "sen2"),
                block: int = 4096) -> tuple[dict[str, torch.Tensor], torch.Tensor, tuple[str, ...]]:
    """Read an So2Sat LCZ42 HDF5 file: (per-modality inputs (N, C, 32, 32), labels (N,), class names)."""
    path = Path(path)
    if not path.is_file():
        raise OODLensError(f"So2Sat file not found: {path}")
    unknown = [m for m in modalities if m not in SO2SAT_KEYS]
    if unknown or not modalities:
        raise OODLensError(f"So2Sat modalities are {list(SO2SAT_KEYS)}, got {list(modalities)}")
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise OODLensError(f"{path} is not a readable HDF5 file ({e})") from e
    with f:
        missing = [k for k in (*modalities, "label") if k not in f]
        if missing:
            raise OODLensError(f"{path}: missing datasets {missing} (So2Sat files hold sen1, sen2 and label)")
        n = f["label"].shape[0]
        start, stop, step = (rows or slice(None)).indices(n)
        if step != 1:
            raise OODLensError("read_so2sat reads contiguous rows: use a slice without a step")
        onehot = np.asarray(f["label"][start:stop])
        if onehot.ndim != 2 or onehot.shape[1] != len(SO2SAT_CLASSES):
            raise OODLensError(f"{path}: 'label' must be (N, {len(SO2SAT_CLASSES)}) one-hot, got {onehot.shape}")
        sums = onehot.sum(1)
        if not np.allclose(sums, 1.0):
            bad = int(np.flatnonzero(~np.isclose(sums, 1.0))[0]) + start
            raise OODLensError(f"{path}: 'label' row {bad} is not one-hot (sums to {sums[bad - start]:g})")
        inputs = {}
        for m in modalities:
            ds = f[m]
            want = (n, 32, 32, SO2SAT_KEYS[m])
            if tuple(ds.shape) != want:
                raise OODLensError(f"{path}: '{m}' must have shape {want}, got {tuple(ds.shape)}")
            out = torch.empty(stop - start, SO2SAT_KEYS[m], 32, 32)
            for i in range(start, stop, block):  # row blocks: a slice of a large file never loads whole
                j = min(i + block, stop)
                out[i - start:j - start] = torch.from_numpy(np.asarray(ds[i:j], dtype=np.float32)).permute(0, 3, 1, 2)
            if not bool(torch.isfinite(out).all()):
                raise OODLensError(f"{path}: '{m}' holds non-finite values")
            inputs[m] = out
    return inputs, torch.from_numpy(onehot.argmax(1).astype(np.int64)), SO2SAT_CLASSES


def read_image_folders(root: str | os.PathLike, size: int = 64, classes: Sequence[str] | None = None,
                       modality: str = "optical") -> tuple[dict[str, torch.Tensor], torch.Tensor, tuple[str, ...]]:
    """Read a folder-per-class image data set such as AID: ({modality: (N, 3, size, size)} in [0, 1], labels,
    class names). ``classes`` picks (and orders) class folders; by default every sub-folder, sorted."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise OODLensError(f"image folder not found: {root}")
    names = tuple(classes) if classes is not None else tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not names:
        raise OODLensError(f"{root} has no class sub-folders")
    images, labels = [], []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            raise OODLensError(f"class folder not found: {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise OODLensError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for p in files:
            try:
                with Image.open(p) as im:
                    arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.float32)
            except (UnidentifiedImageError, OSError) as e:
                raise OODLensError(f"cannot read image {p} ({e})") from e
            images.append(arr / 255.0)
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return {modality: x}, torch.tensor(labels, dtype=torch.int64), names
