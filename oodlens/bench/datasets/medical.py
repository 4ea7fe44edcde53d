"""Reading real medical images (DICOM through pydicom, NIfTI through nibabel) into model inputs, and the example
files that ship inside those packages (offline; optional dependencies: ``pip install pydicom nibabel``).

What ships (checked with pydicom 3.0.2 and nibabel 5.4.2): pydicom's ``CT_small.dcm`` (GE, CT, 128×128) and
``MR_small.dcm`` (Toshiba, MR, 64×64); nibabel's ``tests/data`` with ``0.dcm`` / ``1.dcm`` (Siemens MR,
256×256), ``anatomical.nii`` (33×41×25), ``functional.nii`` (17×21×3×20) and ``example4d.nii.gz``
(128×96×24×2), among PAR/REC and MINC files. These are enough to test a reader and a pipeline, not to make claims
about medical performance. Vendor tags (DICOM ``Manufacturer``) serve as acquisition groups.

Every 2-D slice becomes one input: intensities scaled by the slice's 1st–99th percentiles to [0, 1], resized to
``size × size`` (bilinear): ``(N, 1, size, size)`` float32, with a group label (vendor, or the file name for NIfTI,
which has no vendor tag) and the source file per slice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import OODLensError


@dataclass
class MedicalSlices:
    """Slices as model inputs with their acquisition group and source file."""

    inputs: torch.Tensor  # (N, 1, size, size) in [0, 1]
    groups: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    modality: list[str] = field(default_factory=list)


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise OODLensError(f"reading this file needs {module}: pip install {module}") from e


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """Slices (S, H, W) float32 of a DICOM (``.dcm``) or NIfTI (``.nii``, ``.nii.gz``) file, and its metadata
    (``modality``, ``group`` = manufacturer or file name). NIfTI: slices along the third axis, first volume of 4-D."""
    p = Path(path)
    if not p.is_file():
        raise OODLensError(f"{p} is a folder, not a file (list its files)" if p.is_dir() else f"{p} does not exist")
    name = p.name.lower()
    if name.endswith(".dcm"):
        pydicom = _need("pydicom")
        try:
            ds = pydicom.dcmread(str(p))
            arr = ds.pixel_array.astype(np.float32)
        except Exception as e:  # noqa: BLE001  (any reader failure is one clear error naming the file)
            raise OODLensError(f"{p}: not a readable DICOM image ({type(e).__name__}: {e})") from None
        arr = arr[None] if arr.ndim == 2 else arr.reshape(-1, *arr.shape[-2:])
        meta = {"modality": str(getattr(ds, "Modality", "") or "?"),
                "group": str(getattr(ds, "Manufacturer", "") or p.name).strip()}
        return arr, meta
    if name.endswith((".nii", ".nii.gz")):
        nib = _need("nibabel")
        try:
            data = np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)
        except Exception as e:  # noqa: BLE001
            raise OODLensError(f"{p}: not a readable NIfTI image ({type(e).__name__}: {e})") from None
        if data.ndim == 4:
            data = data[..., 0]
        if data.ndim != 3:
            raise OODLensError(f"{p}: expected a 3-D or 4-D volume, got shape {data.shape}")
        return np.moveaxis(data, 2, 0), {"modality": "MR", "group": p.name}
    raise OODLensError(f"{p}: unsupported file type (use .dcm, .nii or .nii.gz)")


def to_inputs(slices: np.ndarray, size: int = 32) -> torch.Tensor:
    """(S, H, W) → (S, 1, size, size) in [0, 1]: per-slice 1st–99th percentile scaling, bilinear resize."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise OODLensError(f"size must be a positive integer, got {size!r}")
    x = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))
    if x.ndim != 3 or not x.shape[0]:
        raise OODLensError(f"slices must be (S, H, W) with S ≥ 1, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise OODLensError("slices hold NaN or infinite pixel values")
    flat = x.reshape(x.shape[0], -1)
    lo, hi = torch.quantile(flat, 0.01, dim=1), torch.quantile(flat, 0.99, dim=1)
    x = ((x - lo[:, None, None]) / (hi - lo).clamp_min(1e-6)[:, None, None]).clamp(0, 1)
    return F.interpolate(x[:, None], size=(size, size), mode="bilinear", align_corners=False)


def read_slices(paths: list[str | os.PathLike], size: int = 32) -> MedicalSlices:
    """Every slice of every file as model inputs, with its group, modality and source."""
    parts, out = [], MedicalSlices(torch.empty(0, 1, size, size))
    for path in paths:
        arr, meta = read_volume(path)
        parts.append(to_inputs(arr, size))
        out.groups += [meta["group"]] * len(arr)
        out.modality += [meta["modality"]] * len(arr)
        out.sources += [Path(path).name] * len(arr)
    if not parts:
        raise OODLensError("no files to read")
    out.inputs = torch.cat(parts)
    return out


def packaged_files() -> dict[str, Path]:
    """The example DICOM / NIfTI files that ship with the installed pydicom and nibabel (none if not installed)."""
    found: dict[str, Path] = {}
    try:
        from pydicom.data import get_testdata_file

        for name in ("CT_small.dcm", "MR_small.dcm"):
            p = get_testdata_file(name)
            if p:
                found[name] = Path(p)
    except ImportError:
        pass
    try:
        import nibabel

        data = Path(nibabel.__file__).parent / "tests" / "data"
        for name in ("0.dcm", "1.dcm", "anatomical.nii", "functional.nii", "example4d.nii.gz"):
            if (data / name).is_file():
                found[name] = data / name
    except ImportError:
        pass
    return found


__all__ = ["MedicalSlices", "packaged_files", "read_slices", "read_volume", "to_inputs"]
