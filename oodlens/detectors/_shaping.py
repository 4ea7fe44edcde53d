"""Shared pieces of the activation-shaping detectors (ReAct, ASH, DICE, SCALE, VRA, RankFeat): shape the features,
pool spatial maps, recompute the logits through the classifier head and return the energy score

    score(x) = − log Σ_c exp( s(x) · (W h(x))_c + b_c )

where h is the shaped (and pooled) feature vector and s(x) an optional per-sample positive factor (ASH-S and
SCALE multiply the features by e^{s1/s2}; it is applied to W h in float64, so a large factor cannot overflow
the float32 features).

Speed on the CPU. Done as a chain of whole-tensor torch ops, the shaping costs several full-size temporaries and
one thread synchronisation per op, and its order statistics (ASH, SCALE) a ``torch.topk`` / ``kthvalue``, several
times the head product. Detectors that implement ``_shape_block_compiled`` are scored in three phases, each on all
rows at once (up to ``COMPILED_BLOCK_ELEMENTS`` numbers) and on all cores: compiled numba kernels
(:mod:`._select`: per-row selection by counting fused with the shaping, or an element-wise clip) write the shaped
rows into one buffer; one head product gives the logits; a compiled kernel (:mod:`._logit_kernels`) gives the
energy (max-shifted logsumexp in float64, the factor and bias applied there). Few phases, because every hand-over
between torch's OpenMP threads, which spin for a while after each op, and the kernels' threads costs time. The
kernels are loaded (compiled the first time, then cached on disk) when the detector is fitted. Where numba is not
installed (or ``USE_COMPILED`` is off) ``_shape_block_cpu`` does the shaping with numpy kernels
(``numpy.partition`` selection) on row blocks; other devices use the torch ``_shape``. The three give the same kept
sets and shaped values (the tests check it); sums and the energy are float64 in another order, so scores agree to
float32 rounding.

The order statistics (per-row k-th largest, kept sets, percentiles) live in :mod:`._order_stats`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Iterator

import numpy as np
import torch

from .._checks import as_float
from ..errors import OODLensError
from ._blocks import row_slices, rows_within
from ._order_stats import Workspace
from ._row_threads import run_rows
from .base import Detector, Head

#: numbers per row block of the CPU shaping kernels (2 MiB in float32): their temporaries stay in cache
BLOCK_ELEMENTS = 1 << 19
#: numbers per row block of the CPU head product (32 MiB in float32): few, large matrix products
HEAD_BLOCK_ELEMENTS = 1 << 23
#: numbers per row block of the compiled CPU path (128 MiB in float32): as few blocks as memory allows, since each
#: hand-over from torch's threads to the kernels' costs (torch's OpenMP workers spin a while after every op)
COMPILED_BLOCK_ELEMENTS = 1 << 25
#: use the compiled (numba) CPU kernels where numba is installed; False: the numpy kernels (tests check both)
USE_COMPILED = True
#: fewer values than this to shape (rows × features): the numpy kernels, which are as fast on small inputs and
#: spare a first use the seconds numba needs to compile or load its kernels (the digits demo: ~10 s)
COMPILED_MIN_VALUES = 1 << 21
_compiled_module = None


def compiled_kernels():
    """The compiled kernels — the public names of :mod:`._select` (selection, clip) and :mod:`._logit_kernels`
    (energy, argmax) in one namespace, imported on first use — or None if ``USE_COMPILED`` is off or numba is not
    installed."""
    global _compiled_module
    if not USE_COMPILED:
        return None
    if _compiled_module is None:
        try:
            from . import _logit_kernels, _select
        except ImportError:  # numba missing: the numpy kernels do the work
            _compiled_module = False
        else:
            _compiled_module = SimpleNamespace(**{name: getattr(m, name) for m in (_select, _logit_kernels)
                                                  for name in m.__all__})
    return _compiled_module or None


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


def row_blocks(n: int, row_numel: int, budget: int | None = None) -> Iterator[slice]:
    """Consecutive row slices of at most ``budget`` (default ``BLOCK_ELEMENTS``) numbers each (at least one row)."""
    return row_slices(n, rows_within(n, row_numel, BLOCK_ELEMENTS if budget is None else budget))


class ShapedEnergy(Detector):
    """Base of the "shape the penultimate activations, then energy through the head" detectors.

    Subclasses set ``name`` and implement ``_shape(z) -> (h, factor)`` (h with z's shape; factor (N,) or None)
    and, if they learn from training data, ``_fit_shaping(z)``. Features may be (N, D) or, where
    ``spatial_inputs`` is set, a map (N, C, *spatial) that is shaped first and average-pooled afterwards.
    On the CPU, a subclass that defines ``_shape_block_cpu`` (numpy, per row block) is scored through it instead.
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
        self._warm_up(z)

    def _warm_up(self, z: torch.Tensor) -> None:
        """Load (or compile, the first time) the compiled kernels that scoring will use, on two training rows: the
        one-time cost of numba and of loading machine code (~0.1 GB of memory, and seconds when compiling) then
        falls on ``fit`` rather than on the first ``score``."""
        if z.device.type != "cpu" or z.shape[0] == 0 or z.numel() < COMPILED_MIN_VALUES:
            return  # a small training set: scoring is most likely small too and takes the numpy kernels
        kernels = compiled_kernels()
        if kernels is None or type(self)._shape_block_compiled is ShapedEnergy._shape_block_compiled:
            return
        try:
            self._score_compiled(z[:2], kernels)
        except OODLensError:  # e.g. an undefined sharpening factor on these rows: scoring will say so
            pass

    def _fit_shaping(self, z: torch.Tensor) -> None:
        """Learn shaping statistics from the training features (default: nothing)."""

    def _shape(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _shape_block_cpu(self, a: np.ndarray, out: np.ndarray | None, work: Workspace) -> np.ndarray | None:
        """Optional numpy kernel for one block of CPU rows ``a`` (rows flattened to (B, n)): write the shaped rows
        into ``out`` (None when ``_shapes_values`` is False) and return the block's factor (B,) float64 or None.
        Temporaries come from ``work`` (reused between blocks)."""
        raise NotImplementedError

    def _shape_block_compiled(self, kernels, a: np.ndarray, out: np.ndarray | None) -> np.ndarray | None:
        """Optional compiled version of ``_shape_block_cpu`` (``kernels`` = :mod:`._select`) for a C-contiguous
        block of rows, which it may split over threads; the same contract. Used where numba is installed."""
        raise NotImplementedError

    #: whether the block kernels write shaped values (False: the features are used as they are, e.g. SCALE)
    _shapes_values: bool = True

    def _score_compiled(self, z: torch.Tensor, kernels) -> torch.Tensor:
        """The score on the CPU through ``_shape_block_compiled``: per block of rows, shape into a reused buffer
        and one head product into the (N, C) logits; then the energy of all rows by a compiled kernel (factor and
        bias applied in float64). Each phase runs on all cores; few blocks, so few hand-overs between the
        compiled kernels' threads and torch's."""
        n = z.shape[0]
        a = z.reshape(n, -1).detach().numpy()
        w = self.head_.weight.to(z.dtype).T
        logits = np.empty((n, w.shape[1]), dtype=a.dtype)
        factor: np.ndarray | None = None
        work = Workspace()
        for blk in row_blocks(n, a.shape[1], COMPILED_BLOCK_ELEMENTS):
            rows = a[blk]
            if not rows.flags.c_contiguous:
                rows = work.get("rows", rows.shape, rows.dtype)
                np.copyto(rows, a[blk])
            shaped = work.get("shaped", rows.shape, a.dtype) if self._shapes_values else None
            f = self._shape_block_compiled(kernels, rows, shaped)
            if f is not None:
                if factor is None:
                    factor = np.empty(n)
                factor[blk] = f
            h = pool_spatial(torch.from_numpy(rows if shaped is None else shaped).view(-1, *z.shape[1:]))
            torch.mm(h, w, out=torch.from_numpy(logits[blk]))
        bias = self.head_.bias.to(torch.float64).numpy()
        energy = np.empty(n)
        scale = np.empty(0) if factor is None else factor

        def part(sl: slice) -> None:
            kernels.energy_rows(logits[sl], scale[sl] if factor is not None else scale, bias, factor is not None,
                                energy[sl])
        run_rows(part, n, torch.get_num_threads())
        return torch.from_numpy(energy).to(z.dtype)

    def _score_cpu(self, z: torch.Tensor) -> torch.Tensor:
        """The score on the CPU through the block kernel: shape row blocks (numpy) into a reused buffer, then per
        large block one head product and the energy (no temporary of the input's size)."""
        flat = z.reshape(z.shape[0], -1)
        a = flat.detach().numpy()
        w = self.head_.weight.to(z.dtype).T
        bias = self.head_.bias.to(z.dtype)
        bias64 = self.head_.bias.to(torch.float64).numpy()
        work = Workspace()
        energy = np.empty(a.shape[0], dtype=a.dtype)
        for big in row_blocks(a.shape[0], a.shape[1], HEAD_BLOCK_ELEMENTS):
            rows = a[big]
            shaped = work.get("shaped", rows.shape, a.dtype) if self._shapes_values else None
            parts = [self._shape_block_cpu(rows[b], None if shaped is None else shaped[b], work)
                     for b in row_blocks(rows.shape[0], rows.shape[1])]
            factor = None if any(f is None for f in parts) else np.concatenate(parts)
            h = pool_spatial(torch.from_numpy(rows if shaped is None else shaped).view(-1, *z.shape[1:]))
            logits = work.get("logits", (h.shape[0], w.shape[1]), a.dtype)
            if factor is None:
                torch.addmm(bias, h, w, out=torch.from_numpy(logits))
            else:
                torch.mm(h, w, out=torch.from_numpy(logits))
            for b in row_blocks(logits.shape[0], logits.shape[1]):
                i = range(big.start, big.stop)[b]
                if factor is None:
                    energy[i.start:i.stop] = -_logsumexp_rows(logits[b])
                else:  # factor · (W h) + b in float64, as head_energy
                    logits64 = work.get("logits64", logits[b].shape, np.float64)
                    np.multiply(logits[b], factor[b, None], out=logits64)
                    logits64 += bias64
                    energy[i.start:i.stop] = -_logsumexp_rows(logits64)
        return torch.from_numpy(energy)

    def _score(self, x) -> torch.Tensor:
        z = as_float(x[self.features])
        if z.device.type == "cpu":
            kernels = compiled_kernels() if z.numel() >= COMPILED_MIN_VALUES else None
            if kernels is not None and type(self)._shape_block_compiled is not ShapedEnergy._shape_block_compiled:
                return self._score_compiled(z, kernels)
            if type(self)._shape_block_cpu is not ShapedEnergy._shape_block_cpu:
                return self._score_cpu(z)
        h, factor = self._shape(z)
        return head_energy(pool_spatial(h), self.head_, factor)


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """log Σ_j exp(x_ij) per row, max-shifted like ``torch.logsumexp``; overwrites ``x``."""
    m = x.max(1)
    x -= m[:, None]
    np.exp(x, out=x)
    return np.log(x.sum(1)) + m
