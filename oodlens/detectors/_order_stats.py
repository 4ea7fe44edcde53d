"""Order statistics of the activation-shaping detectors (ASH, SCALE, ReAct, VRA, DICE): the per-row k-th largest
value, top-k sum and kept set — in torch, in numpy (``numpy.partition``) and through the compiled kernels of
:mod:`._select` — with the reference code's tie rule (``torch.topk`` on rows tied at the threshold); an exact
``numpy.percentile`` (linear interpolation) for tensors of any size; keep counts and the ASH-S / SCALE
sharpening factor; and ``Workspace``, the reusable numpy buffers of the CPU block kernels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import OODLensError
from ._row_threads import run_rows


class Workspace:
    """Reusable numpy buffers for the CPU block kernels: ``get(name, shape, dtype)`` returns a view of a buffer
    allocated once (at the first block's size), so the blocks allocate no fresh memory."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        size = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != np.dtype(dtype):
            buf = self._buffers[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


# -- order statistics -------------------------------------------------------------------------------------------
def _kth_smallest(x: torch.Tensor, ranks: list[int], dim: int) -> list[torch.Tensor]:
    """The ``r``-th smallest values (0-based ranks) of ``x`` along ``dim``, one tensor per rank (exact)."""
    if x.device.type == "cpu":
        part = np.partition(x.detach().numpy(), sorted(set(ranks)), axis=dim)
        return [torch.from_numpy(np.ascontiguousarray(np.take(part, r, axis=dim))) for r in ranks]
    return [x.kthvalue(r + 1, dim=dim).values for r in ranks]


def top_k_threshold_sum(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For (N, n) rows: the k-th largest value t of each row and the sum of its k largest values (float64).

    The sum is exact whatever the ties: the k largest are the values above t plus copies of t.
    """
    if flat.device.type == "cpu":
        t, s2, _ = top_k_threshold_sum_np(flat.detach().numpy(), k)
        return torch.from_numpy(t), torch.from_numpy(s2)
    values = torch.topk(flat, k, dim=1, sorted=False).values
    return values.amin(1), values.sum(1, dtype=torch.float64)


def top_k_threshold_sum_np(a: np.ndarray, k: int, work: Workspace | None = None, with_sum: bool = True
                           ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """numpy version of :func:`top_k_threshold_sum` (one ``partition`` per block of rows), plus per row whether
    the k-th largest value also occurs below the top k (a tie at the threshold: more than k entries reach it)."""
    n = a.shape[1]
    part = np.empty_like(a) if work is None else work.get("partition", a.shape, a.dtype)
    np.copyto(part, a)
    # columns n−k.. hold the k largest, column n−k the k-th largest; a single kth keeps numpy's fast (SIMD) path
    part.partition(n - k, axis=1)
    threshold = part[:, n - k].copy()
    tied = part[:, :n - k].max(1) == threshold if k < n else np.zeros(a.shape[0], dtype=bool)
    return threshold, (part[:, n - k:].sum(1, dtype=np.float64) if with_sum else None), tied


def top_k_mask(flat: torch.Tensor, k: int, threshold: torch.Tensor, zero_ties_matter: bool) -> torch.Tensor:
    """Boolean (N, n) mask of the k largest entries of each row, given each row's k-th largest ``threshold``.

    Where more than k entries reach the threshold (ties at the k-th value), which of the tied entries are kept is
    decided by ``torch.topk`` on those rows, exactly as the reference code does; a tie at 0 is resolved so only
    if ``zero_ties_matter`` (a kept 0 changes nothing unless the kept entries are replaced by another value).
    """
    mask = flat >= threshold[:, None]
    tied = mask.sum(1) > k
    if not zero_ties_matter:
        tied &= threshold != 0
    rows = tied.nonzero().flatten()
    if rows.numel():
        index = torch.topk(flat[rows], k, dim=1).indices
        mask[rows] = torch.zeros_like(mask[rows]).scatter_(1, index, True)
    return mask


def top_k_mask_np(a: np.ndarray, k: int, threshold: np.ndarray, tied: np.ndarray, zero_ties_matter: bool,
                  work: Workspace | None = None) -> np.ndarray:
    """numpy version of :func:`top_k_mask`, given the rows with ties from :func:`top_k_threshold_sum_np` (tied
    rows still go through ``torch.topk``, so the same entries are kept)."""
    mask = np.empty(a.shape, dtype=bool) if work is None else work.get("mask", a.shape, bool)
    np.greater_equal(a, threshold[:, None], out=mask)
    if not zero_ties_matter:
        tied = tied & (threshold != 0)
    rows = np.flatnonzero(tied)
    if rows.size:
        index = torch.topk(torch.from_numpy(a[rows]), k, dim=1).indices.numpy()
        fixed = np.zeros((rows.size, a.shape[1]), dtype=bool)
        np.put_along_axis(fixed, index, True, axis=1)
        mask[rows] = fixed
    return mask


def top_k_rows_compiled(kernels, a: np.ndarray, k: int, mode: int, out: np.ndarray | None, sums: bool = True
                        ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray]:
    """Compiled per-row selection (:func:`._select.topk_rows`) of a C-contiguous (B, n) block, fused with the
    shaping ``mode`` (``kernels.PRUNE`` / ``BINARISE`` write ``out``; ``STATS`` does not), on the torch thread
    count. Returns s1 = row sums and s2 = top-k sums (float64; None unless ``sums``), the kept-set thresholds and
    the tied rows (more than k entries reach the k-th largest value, which is then the threshold); see
    :func:`top_k_threshold_sum_np`."""
    rows = a.shape[0]
    s1, s2 = np.empty(rows if sums else 0), np.empty(rows if sums else 0)
    threshold, tied = np.empty(rows, dtype=a.dtype), np.empty(rows, dtype=bool)
    ints = a.view(np.int32 if a.dtype == np.float32 else np.int64)
    target = np.empty((0, a.shape[1]), dtype=a.dtype) if out is None else out

    def part(sl: slice) -> None:
        scratch = np.zeros(1, dtype=a.dtype)
        kernels.topk_rows(a[sl], ints[sl], k, mode, sums, target if out is None else target[sl],
                          s1[sl] if sums else s1, s2[sl] if sums else s2, threshold[sl], tied[sl], scratch,
                          scratch.view(ints.dtype))
    run_rows(part, rows, torch.get_num_threads())
    return (s1, s2, threshold, tied) if sums else (None, None, threshold, tied)


def keep_top_k_of_tied_rows(a: np.ndarray, out: np.ndarray, k: int, rows: np.ndarray,
                            value: np.ndarray | None = None) -> None:
    """On the given rows of a shaped block, keep exactly the k entries that ``torch.topk`` keeps (ties at the k-th
    value): ``out`` = a there (or the row's ``value``, ASH-B), 0 elsewhere."""
    if rows.size == 0:
        return
    index = torch.topk(torch.from_numpy(a[rows]), k, dim=1).indices.numpy()
    fixed = np.zeros((rows.size, a.shape[1]), dtype=a.dtype)
    if value is None:
        np.put_along_axis(fixed, index, np.take_along_axis(a[rows], index, axis=1), axis=1)
    else:
        np.put_along_axis(fixed, index, value[:, None].astype(a.dtype), axis=1)
    out[rows] = fixed


def clip_rows_compiled(kernels, a: np.ndarray, lower: np.ndarray | None, upper: np.ndarray, gamma: float,
                       out: np.ndarray) -> None:
    """Compiled VRA / ReAct shaping (:func:`._select.clip_rows`) of a C-contiguous (B, D) block into ``out``, in
    a's precision: h = 0 where a < lower (no lower bound if None), else a + γ; upper where h > upper + γ."""
    dtype = a.dtype.type
    upper = np.ascontiguousarray(upper, dtype=a.dtype)
    lower = np.full_like(upper, np.finfo(a.dtype).min) if lower is None else np.ascontiguousarray(lower, a.dtype)
    g = dtype(gamma)
    upper_gamma = upper + g  # computed in a's precision, as the torch path does

    def part(sl: slice) -> None:
        kernels.clip_rows(a[sl], lower, upper, upper_gamma, g, out[sl])
    run_rows(part, a.shape[0], torch.get_num_threads())


# -- percentiles ------------------------------------------------------------------------------------------------
def check_percentile(p: float, what: str, allow_100: bool = True) -> float:
    """``p`` as a float in [0, 100] (or [0, 100)), else a clear error."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise OODLensError(f"{what} must be a number in [0, 100], got {p!r}") from None
    if not (0.0 <= value <= 100.0) or (not allow_100 and value == 100.0):
        raise OODLensError(f"{what} must be in [0, 100{']' if allow_100 else ')'}, got {p!r}")
    return value


def percentile(x: torch.Tensor, q: float, dim: int | None = None) -> torch.Tensor:
    """``numpy.percentile(x, q, axis=dim)`` with its default linear interpolation, in float64.

    Works on tensors of any size (``torch.quantile`` refuses large inputs): the two order statistics around the
    virtual index q/100·(n−1) are found by a selection (no full sort) and interpolated as numpy does.
    """
    q = check_percentile(q, "percentile")
    flat = x.reshape(-1) if dim is None else x
    d = 0 if dim is None else dim
    n = flat.shape[d]
    if n == 0:
        raise OODLensError("cannot take a percentile of an empty tensor")
    index = q / 100.0 * (n - 1)
    lo = int(math.floor(index))
    hi = min(lo + 1, n - 1)
    t = index - lo
    a, b = (v.to(x.device, torch.float64) for v in _kth_smallest(flat, [lo, hi], d))
    if t == 0.0:
        return a
    diff = b - a
    # numpy's _lerp: a + (b - a) t, computed from the upper end when t >= 0.5 (keeps monotonicity)
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


# -- top-k pruning (ASH, SCALE) ---------------------------------------------------------------------------------
def keep_count(n: int, p: float, what: str) -> int:
    """Number of activations kept when pruning the lowest ``p`` percent of ``n``: n − round(n·p/100), as the
    reference code computes it (round half to even, like ``numpy.round``). Raises if nothing would be kept."""
    p = check_percentile(p, f"{what} percentile")
    k = n - int(round(n * p / 100.0))
    if k < 1:
        raise OODLensError(f"{what} percentile {p} prunes all {n} activations; use a smaller percentile")
    return k


def sharpening_factor(s1: torch.Tensor, s2: torch.Tensor, what: str) -> torch.Tensor:
    """e^{s1/s2} per sample, float64 (ASH-S, SCALE): s1 = sum of all activations, s2 = sum of the kept top-k.

    An all-zero row (s1 = s2 = 0) gets factor 1 (it multiplies zeros, so any factor gives the same logits);
    a row whose kept activations sum to 0 while the whole row does not has no defined ratio and raises.
    """
    both_zero = (s1 == 0) & (s2 == 0)
    bad = (s2 == 0) & ~both_zero
    if bool(bad.any()):
        raise OODLensError(f"{what}: the kept top-k activations sum to 0 in {int(bad.sum())} row(s) while the row "
                           "does not, so s1/s2 is undefined; this method expects non-negative (post-ReLU) features")
    ratio = torch.where(both_zero, torch.zeros_like(s1), s1 / torch.where(both_zero, torch.ones_like(s2), s2))
    return torch.exp(ratio)
