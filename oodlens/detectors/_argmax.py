"""Row-wise argmax of logits. On the CPU torch's max-with-index over short rows (C ≈ 100) costs several times a
plain max, so large CPU inputs go through the compiled kernel :func:`._logit_kernels.argmax_rows` (rows split over the
torch thread count); small inputs, other devices, or no numba: ``torch.argmax``. Both return the first index of
the maximum."""

from __future__ import annotations

import numpy as np
import torch

from . import _shaping
from ._row_threads import run_rows


def _kernels_for(x: torch.Tensor):
    """The compiled kernels if ``x`` should use them (a large 2-D float CPU tensor, numba installed), else None."""
    if x.device.type == "cpu" and x.ndim == 2 and x.shape[1] > 0 and x.numel() >= _shaping.COMPILED_MIN_VALUES \
            and x.dtype in (torch.float32, torch.float64):
        return _shaping.compiled_kernels()
    return None


def row_argmax(x: torch.Tensor) -> torch.Tensor:
    """Index of each row's (first) largest entry, (N,) int64, for a 2-D float tensor without NaN."""
    kernels = _kernels_for(x)
    if kernels is None:
        return x.argmax(1)
    a = x.detach().contiguous().numpy()
    out = np.empty(a.shape[0], dtype=np.int64)
    run_rows(lambda sl: kernels.argmax_rows(a[sl], out[sl]), a.shape[0], torch.get_num_threads())
    return torch.from_numpy(out)


def warm_up_row_argmax(x: torch.Tensor) -> None:
    """Load (compile the first time) the kernel at fit when ``x`` — e.g. the training logits — is large enough
    to use it, so that the first score does not pay numba's start-up."""
    kernels = _kernels_for(x)
    if kernels is not None:
        kernels.argmax_rows(x[:2].detach().contiguous().numpy(), np.empty(min(2, x.shape[0]), dtype=np.int64))
