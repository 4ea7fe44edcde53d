"""Input checks shared by the segmentation metrics: score maps and label maps of one shape, no NaN, labels as
0 (normal) / 1 (anomaly) / ignore, an optional region of interest."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import OODLensError


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A CPU numpy view/copy of a tensor, array or nested list."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # pragma: no cover - message path
        raise OODLensError(f"{name}: cannot convert {type(x).__name__} to an array ({e})") from e


def check_maps(scores: np.ndarray, labels: np.ndarray, roi: np.ndarray | None, flat_ok: bool = False) -> int:
    """Raise unless scores and labels (and roi) are (H, W) or (B, H, W) maps (or, where ``flat_ok``, flat (N,)
    pixels) of one shape; returns B (1 for one map or flat pixels)."""
    if scores.ndim not in ((1, 2, 3) if flat_ok else (2, 3)):
        raise OODLensError(f"score maps must be (H, W) or (B, H, W), got shape {scores.shape}")
    if labels.shape != scores.shape:
        raise OODLensError(f"label maps have shape {labels.shape} but the score maps have {scores.shape}; "
                           "resize the scores to the label size first (e.g. upsample_scores)")
    if roi is not None and roi.shape != scores.shape:
        raise OODLensError(f"the region-of-interest mask has shape {roi.shape} but the score maps have {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating) and not np.issubdtype(scores.dtype, np.integer):
        raise OODLensError(f"scores must be real numbers, got dtype {scores.dtype}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise OODLensError(f"labels must be integers (0 normal, 1 anomaly, ignore), got dtype {labels.dtype}")
    return scores.shape[0] if scores.ndim == 3 else 1


def flat_pixels(scores: Any, labels: Any, roi: Any = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Flat contiguous float32 scores, uint8 labels and uint8 roi (or None), and the number of frames (maps
    (H, W) / (B, H, W), or already flat pixels (N,))."""
    s, lab = to_numpy(scores, "scores"), to_numpy(labels, "labels")
    r = None if roi is None else to_numpy(roi, "roi")
    frames = check_maps(s, lab, r, flat_ok=True)
    if lab.dtype != np.uint8:
        if lab.size and (int(lab.min()) < 0 or int(lab.max()) > 255):
            raise OODLensError(f"labels must be in 0..255 (0 normal, 1 anomaly, ignore), got values in "
                               f"[{int(lab.min())}, {int(lab.max())}]")
        lab = lab.astype(np.uint8)
    s32 = np.ascontiguousarray(s, dtype=np.float32).reshape(-1)
    r8 = None if r is None else np.ascontiguousarray(r != 0, dtype=np.uint8).reshape(-1)
    return s32, np.ascontiguousarray(lab).reshape(-1), r8, frames


def anomaly_labels(semantic: Any, anomaly_ids: Sequence[int] = (254,), ignore_ids: Sequence[int] = (255,),
                   ignore_index: int = 255) -> torch.Tensor:
    """Map a semantic label map to the binary evaluation labels: 1 where the id is in ``anomaly_ids``,
    ``ignore_index`` where it is in ``ignore_ids``, 0 elsewhere (uint8, same shape)."""
    sem = torch.as_tensor(to_numpy(semantic, "semantic labels"))
    if sem.is_floating_point() or sem.is_complex():
        raise OODLensError(f"semantic labels must be integers, got dtype {sem.dtype}")
    out = torch.zeros(sem.shape, dtype=torch.uint8)
    out[torch.isin(sem, torch.as_tensor(list(anomaly_ids), dtype=sem.dtype))] = 1
    if len(ignore_ids):
        out[torch.isin(sem, torch.as_tensor(list(ignore_ids), dtype=sem.dtype))] = ignore_index
    return out
