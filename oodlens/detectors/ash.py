"""ASH: activation shaping (Djurisic, Bozanic, Ashok & Liu, ICLR 2023, "Extremely Simple Activation Shaping for
Out-of-Distribution Detection"), three registered variants sharing one implementation.

Per sample, over all n entries a of the activation (a vector, or a whole C×H×W map flattened), with
k = n − round(n·p/100) kept entries, K = the indices of the k largest, s1 = Σ_i a_i and s2 = Σ_{i∈K} a_i:

    ASH-P (``ash_p``):  h_i = a_i          for i ∈ K, else 0          (prune)
    ASH-B (``ash_b``):  h_i = s1 / k       for i ∈ K, else 0          (binarise, keeping the total)
    ASH-S (``ash_s``):  h_i = a_i · e^{s1/s2} for i ∈ K, else 0       (prune, then scale)
    score(x) = − log Σ_c exp((W pool(h) + b)_c)                       (energy, T = 1)

pool is the global average over spatial dimensions (identity for (N, D) features). This is the reference code
(andrijazz/ash, ``ash.py``: ``ash_p``, ``ash_b``, ``ash_s`` with ``torch.topk`` and the same k), which returns
logsumexp as an ID score; we return the energy, so higher = more OOD.

Where ASH is applied: the reference code applies it to the penultimate activation *after* global average pooling
(``x = self.avgpool(x); x = apply_ash(x, ...)`` in its ResNet-50 and DenseNet), i.e. on the (N, D) ``features``,
which is the default here and also what OpenOOD does. The paper's figure describes shaping the feature map before
pooling; pass a spatial map (e.g. ``features="layer4"`` extracted with ``pool="none"``) to get that: it is shaped
per sample over all C·H·W entries and then average-pooled before the head.

Defaults are the paper's ImageNet/ResNet-50 settings (Table 1): ASH-P@60, ASH-B@65, ASH-S@90 (the repository's
configs also use ``ash_s@90`` for CIFAR-10). Ties at the k-th largest value (e.g. many zeros when fewer than k
activations are positive) are broken by ``torch.topk``, as in the reference; this matters only for ASH-B (and for
ASH-P/S only for ties at a non-zero value). Implementation: per row the k-th largest value t comes from one
selection and the kept set is {a ≥ t}; ``torch.topk`` runs only on the rather rare rows where that set has more
than k entries (ties at t), so the kept set is always the one ``torch.topk`` returns. On the CPU the selection is
the compiled counting selection of :mod:`._select`, fused with the shaping (one kernel per row: sums, threshold,
shaped row), or ``numpy.partition`` where numba is not installed; ``torch.topk`` on other devices.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from ._order_stats import (Workspace, keep_count, keep_top_k_of_tied_rows, sharpening_factor, top_k_mask,
                           top_k_mask_np, top_k_rows_compiled, top_k_threshold_sum, top_k_threshold_sum_np)
from ._shaping import ShapedEnergy


class _ASH(ShapedEnergy):
    """Shared ASH implementation; subclasses fix ``variant`` and the default percentile."""

    variant: ClassVar[str] = ""
    spatial_inputs = True
    param_grid = {"percentile": [60, 65, 70, 75, 80, 85, 90, 95]}
    score_only_params = frozenset({"percentile"})

    percentile: float

    def _fit_shaping(self, z: torch.Tensor) -> None:
        keep_count(math.prod(z.shape[1:]), self.percentile, self._what())

    def _what(self) -> str:
        return f"ASH-{self.variant.upper()}"

    def _shape(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        flat = z.flatten(1)
        k = keep_count(flat.shape[1], self.percentile, self._what())
        threshold, s2 = top_k_threshold_sum(flat, k)
        keep = top_k_mask(flat, k, threshold, zero_ties_matter=self.variant == "b")
        factor = None
        if self.variant == "b":  # h = s1/k on the kept entries
            s1 = flat.sum(1, dtype=torch.float64)
            h = keep.to(flat.dtype).mul_((s1 / k).to(flat.dtype)[:, None])
        else:  # h = a on the kept entries (times e^{s1/s2} for ASH-S, applied to the logits)
            h = flat.masked_fill(~keep, 0.0)
            if self.variant == "s":
                factor = sharpening_factor(flat.sum(1, dtype=torch.float64), s2, "ASH-S")
        return h.view_as(z), factor

    def _shape_block_cpu(self, a: np.ndarray, out: np.ndarray, work: Workspace) -> np.ndarray | None:
        """numpy version of ``_shape`` for a block of flattened rows (the same kept set and values)."""
        k = keep_count(a.shape[1], self.percentile, self._what())
        threshold, s2, tied = top_k_threshold_sum_np(a, k, work, with_sum=self.variant == "s")
        keep = top_k_mask_np(a, k, threshold, tied, zero_ties_matter=self.variant == "b", work=work)
        if self.variant == "b":
            np.multiply(keep, (a.sum(1, dtype=np.float64) / k).astype(a.dtype)[:, None], out=out)
            return None
        np.multiply(a, keep, out=out)
        if self.variant == "p":
            return None
        return sharpening_factor(torch.from_numpy(a.sum(1, dtype=np.float64)), torch.from_numpy(s2), "ASH-S").numpy()


    def _shape_block_compiled(self, kernels, a: np.ndarray, out: np.ndarray) -> np.ndarray | None:
        """Compiled version of ``_shape``: selection fused with the shaping (the same kept set and values)."""
        k = keep_count(a.shape[1], self.percentile, self._what())
        binarise = self.variant == "b"
        s1, s2, threshold, tied = top_k_rows_compiled(kernels, a, k, kernels.BINARISE if binarise else kernels.PRUNE,
                                                      out, sums=self.variant == "s")
        if not binarise:  # a kept 0 is 0 whichever tied entries are kept
            tied &= threshold != 0
        rows = np.flatnonzero(tied)
        keep_top_k_of_tied_rows(a, out, k, rows, a[rows].sum(1, dtype=np.float64) / k if binarise else None)
        if self.variant != "s":
            return None
        return sharpening_factor(torch.from_numpy(s1), torch.from_numpy(s2), "ASH-S").numpy()


class ASHP(_ASH):
    name = "ash_p"
    variant = "p"

    def __init__(self, percentile: float = 60.0, features: str = "features"):
        self.percentile = percentile
        self.features = features


class ASHB(_ASH):
    name = "ash_b"
    variant = "b"

    def __init__(self, percentile: float = 65.0, features: str = "features"):
        self.percentile = percentile
        self.features = features


class ASHS(_ASH):
    name = "ash_s"
    variant = "s"
    #: the toy's 16 features: keeping the top 10% (2 units) leaves too little signal
    test_params = {"percentile": 50}

    def __init__(self, percentile: float = 90.0, features: str = "features"):
        self.percentile = percentile
        self.features = features
