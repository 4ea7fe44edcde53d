"""The files of a saved monitor, checked before use: ``manifest.json`` (every field's type and range),
detector files that must lie inside the monitor's folder, and the sorted calibration scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .._checks import check_finite
from ..calibrate import PVALUE_METHODS
from ..errors import OODLensError
from ..fusion.rules import P_RULES
from ..safetensors_io import load_tensors

FORMAT = "oodlens-monitor"


def read_manifest(mpath: Path) -> dict[str, Any]:
    """The saved monitor's manifest, every field checked (type and range), or one error naming the field."""
    try:
        m = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OODLensError(f"{mpath} is not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise OODLensError(f"{mpath} is not an oodlens monitor manifest")
    if m.get("version") != 1:
        raise OODLensError(f"{mpath}: field 'version' is {m.get('version')!r}; this oodlens reads version 1")

    def bad(field: str, want: str) -> OODLensError:
        return OODLensError(f"{mpath}: field {field!r} must be {want}, got {m.get(field)!r}")

    missing = [k for k in ("detectors", "layers", "pool", "acceptance", "pvalues", "delta", "combine", "batch_size",
                           "n_calibration") if k not in m]
    if missing:
        raise OODLensError(f"{mpath}: missing field(s) {missing}")
    dets = m["detectors"]
    if not isinstance(dets, list) or not dets or not all(
            isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("label", "file", "detector")) for e in dets):
        raise bad("detectors", "a non-empty list of {label, file, detector} strings")
    if len({e["label"] for e in dets}) != len(dets):
        raise bad("detectors", "a list with distinct labels")
    layers = m["layers"]
    if not (layers is None or (isinstance(layers, list) and all(isinstance(x, str) for x in layers))
            or (isinstance(layers, dict) and all(isinstance(x, str) for x in layers.values()))):
        raise bad("layers", "null, a list of layer names or a mapping layer -> feature name")
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if not isinstance(m["pool"], str):
        raise bad("pool", "a string")
    for field in ("acceptance", "delta"):
        if not (number(m[field]) and 0.0 < m[field] < 1.0):
            raise bad(field, "a number in (0, 1)")
    if m["pvalues"] not in PVALUE_METHODS:
        raise bad("pvalues", f"one of {', '.join(PVALUE_METHODS)}")
    if m["combine"] not in P_RULES:
        raise bad("combine", f"one of {', '.join(P_RULES)}")
    for field in ("batch_size", "n_calibration"):
        if not (isinstance(m[field], int) and not isinstance(m[field], bool) and m[field] >= 1):
            raise bad(field, "a positive integer")
    return m


def inside(folder: Path, name: str, mpath: Path) -> Path:
    """``folder / name``, refusing a path that leaves the monitor's folder."""
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise OODLensError(f"{mpath}: detector file {name!r} lies outside the monitor's folder")
    return path


def calibration_scores(path: Path, count: int, n: int) -> list[torch.Tensor]:
    """The saved calibration scores ``cal/0..count-1``: each 1-D, finite, sorted and of length ``n``."""
    tensors, _ = load_tensors(path, mmap=False)
    out = []
    for i in range(count):
        t = tensors.get(f"cal/{i}")
        if t is None:
            raise OODLensError(f"{path}: tensor 'cal/{i}' is missing")
        if t.ndim != 1 or not t.is_floating_point() or t.shape[0] != n:
            raise OODLensError(f"{path}: tensor 'cal/{i}' must be {n} float scores, got {t.dtype} {tuple(t.shape)}")
        check_finite(t, f"{path}: tensor 'cal/{i}'")
        if t.numel() > 1 and not bool((t[1:] >= t[:-1]).all()):
            raise OODLensError(f"{path}: tensor 'cal/{i}' is not sorted (edited or corrupted)")
        out.append(t)
    return out
