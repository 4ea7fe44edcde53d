"""Detect calibration data that overlaps the fitting data (identical rows), without an N×M comparison.

Conformal guarantees need calibration data *held out* from fitting. Rows are hashed (a 64-bit hash of each row's
values after casting to float64, so a float16 copy of a float32 row hashes the same; −0.0 counts as 0.0), hashes
are intersected with a sort, and only candidate pairs with equal hashes are compared value by value — O(N log N)
time, O(N) memory. Near-duplicates (augmented or re-encoded images) are not detected.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from .._checks import as_tensor
from ..errors import OODLensError


def _rows(x: Any, name: str) -> np.ndarray:
    t = as_tensor(x, name).detach()
    if t.ndim == 0:
        raise OODLensError(f"{name} needs a first dimension N")
    t = t.reshape(t.shape[0], -1).to("cpu")
    t = t.to(torch.float64) + 0.0 if (t.is_floating_point() or t.dtype == torch.bool) else t.to(torch.int64)
    return np.ascontiguousarray(t.numpy())


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (bijective on uint64)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _hash_array(a: np.ndarray, chunk: int = 65536) -> np.ndarray:
    words = a.view(np.uint64)
    d = words.shape[1]
    mult = _mix(np.arange(1, d + 1, dtype=np.uint64)) | np.uint64(1)  # odd, position-dependent
    out = np.empty(words.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(0, words.shape[0], chunk):
            out[i:i + chunk] = _mix((_mix(words[i:i + chunk]) * mult).sum(1, dtype=np.uint64))
    return out


def _named(x: Any, name: str) -> dict[str, np.ndarray]:
    if isinstance(x, Mapping):
        return {k: _rows(v, f"{name}[{k!r}]") for k, v in x.items()}
    return {"": _rows(x, name)}


def row_hashes(x: Any) -> torch.Tensor:
    """64-bit hash (as int64) of every row of a tensor / array, or of a Features/dict (all tensors of a row)."""
    parts = _named(x, "input")
    h = None
    for k in sorted(parts):
        hk = _hash_array(parts[k])
        with np.errstate(over="ignore"):
            h = hk if h is None else _mix(h * np.uint64(0x9E3779B97F4A7C15) + hk)
    return torch.from_numpy(h.view(np.int64).copy())


def overlapping_rows(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` with row ``i`` of ``a`` identical to row ``j`` of ``b`` (one ``j`` per ``i``).

    For Features/dicts, rows are compared on the names both hold (no common name: nothing is detectable)."""
    pa, pb = _named(a, "first input"), _named(b, "second input")
    common = sorted(set(pa) & set(pb))
    common = [k for k in common if pa[k].shape[1:] == pb[k].shape[1:]]
    if not common:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ha = row_hashes({k: pa[k] for k in common}).numpy()
    hb = row_hashes({k: pb[k] for k in common}).numpy()
    ub, first_b = np.unique(hb, return_index=True)
    pos = np.searchsorted(ub, ha).clip(0, max(len(ub) - 1, 0))
    cand = np.flatnonzero(ub[pos] == ha) if len(ub) else np.empty(0, np.int64)
    ia, ib = cand, first_b[pos[cand]]
    same = np.ones(len(ia), dtype=bool)
    for k in common:
        same &= (pa[k][ia] == pb[k][ib]).all(1)
    return ia[same].astype(np.int64), ib[same].astype(np.int64)


def check_disjoint(fit_data: Any, calibration_data: Any, fit_name: str = "fitting data",
                   cal_name: str = "calibration data") -> None:
    """Raise :class:`OODLensError` if any calibration row is identical to a fitting row (or the two are the same
    tensor): conformal p-values and thresholds are only valid on held-out calibration data."""
    if fit_data is calibration_data:
        raise OODLensError(f"{cal_name} is the same object as the {fit_name}; calibrate on held-out data")
    ia, ib = overlapping_rows(calibration_data, fit_data)
    if len(ia):
        n_cal = _first_dim(calibration_data)
        raise OODLensError(f"{cal_name} overlaps the {fit_name}: {len(ia)} of {n_cal} rows are identical to "
                           f"{fit_name} rows (e.g. {cal_name} row {int(ia[0])} = {fit_name} row {int(ib[0])}); conformal guarantees "
                           f"need calibration data held out from fitting")


def _first_dim(x: Any) -> int:
    if isinstance(x, Mapping):
        return int(next(iter(x.values())).shape[0]) if len(x) else 0
    return int(as_tensor(x).shape[0])


def rows_in_hashes(hashes: Any, data: Any) -> np.ndarray:
    """Indices of ``data`` rows whose hash is in ``hashes`` (from :func:`row_hashes` of the fitting data, e.g.
    stored by a fitted detector). Hash-only: a false match needs a 64-bit collision (probability ~N·M/2⁶⁴)."""
    known = np.unique(as_tensor(hashes, "row hashes").to("cpu").numpy().astype(np.int64))
    if known.size == 0:
        return np.empty(0, np.int64)
    h = row_hashes(data).numpy()
    pos = np.searchsorted(known, h).clip(0, known.size - 1)
    return np.flatnonzero(known[pos] == h).astype(np.int64)
