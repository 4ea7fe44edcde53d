"""Shared pieces of the activation-shaping detectors (ReAct, ASH, DICE, SCALE, VRA, RankFeat): shape the features,
pool spatial maps, recompute the logits through the classifier head and return the energy score

    score(x) = − log Σ_c exp( s(x) · (W h(x))_c + b_c )

where h is the shaped (and pooled) feature vector and s(x) an optional per-sample positive factor (ASH-S and
SCALE multiply the features by e^{s1/s2}; it is applied to W h in float64, so a large factor cannot overflow
the float32 features). Also here: an exact ``numpy.percentile`` (linear interpolation) for tensors of any size,
and the top-k pruning with the per-sample sums that ASH and SCALE share.
"""

from __future__ import annotations

import math

import torch

from .._checks import as_float
from ..errors import OODLensError
from .base import Detector, Head


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
    virtual index q/100·(n−1) are found by ``kthvalue`` (a selection, no full sort) and interpolated as numpy does.
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
    a = flat.kthvalue(lo + 1, dim=d).values.to(torch.float64)
    if t == 0.0:
        return a
    b = flat.kthvalue(hi + 1, dim=d).values.to(torch.float64)
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


def top_k_sums(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For (N, n) rows: the k largest values and their indices (``torch.topk``), the row sums s1 and the sums of
    the kept values s2 (both float64)."""
    values, index = torch.topk(flat, k, dim=1)
    return values, index, flat.sum(1, dtype=torch.float64), values.sum(1, dtype=torch.float64)


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


# -- pooling and the head ---------------------------------------------------------------------------------------
def pool_spatial(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) → (N, C) by the mean over the spatial dimensions (global average pooling); (N, D) as is."""
    return t if t.ndim == 2 else t.flatten(2).mean(2)


def head_energy(z: torch.Tensor, head: Head, factor: torch.Tensor | None = None) -> torch.Tensor:
    """−logsumexp over classes of factor · (W z) + b, shape (N,). ``factor`` (N,) multiplies the features."""
    if factor is None:
        return -torch.logsumexp(head.logits(z), dim=1)
    wz = z @ head.weight.to(z.device, z.dtype).T
    logits = factor.to(z.device, torch.float64)[:, None] * wz.to(torch.float64) + head.bias.to(z.device, torch.float64)
    return (-torch.logsumexp(logits, dim=1)).to(z.dtype)


class ShapedEnergy(Detector):
    """Base of the "shape the penultimate activations, then energy through the head" detectors.

    Subclasses set ``name`` and implement ``_shape(z) -> (h, factor)`` (h with z's shape; factor (N,) or None)
    and, if they learn from training data, ``_fit_shaping(z)``. Features may be (N, D) or, where
    ``spatial_inputs`` is set, a map (N, C, *spatial) that is shaped first and average-pooled afterwards.
    """

    needs_head = True

    features: str

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    def _fit(self, train, labels, head, model) -> None:
        z = as_float(train[self.features])
        dim = z.shape[1]
        if head.weight.shape[1] != dim:
            raise OODLensError(f"{type(self).__name__}: feature {self.features!r} has {dim} channels but the head "
                               f"expects {head.weight.shape[1]} inputs (weight shape {tuple(head.weight.shape)})")
        self.head_ = head
        self._fit_shaping(z)

    def _fit_shaping(self, z: torch.Tensor) -> None:
        """Learn shaping statistics from the training features (default: nothing)."""

    def _shape(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _score(self, x) -> torch.Tensor:
        z = as_float(x[self.features])
        h, factor = self._shape(z)
        return head_energy(pool_spatial(h), self.head_, factor)
