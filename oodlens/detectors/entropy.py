"""Predictive entropy of the softmax: the standard Shannon-entropy uncertainty baseline (no single originating
paper; it is the natural companion of the max-softmax baseline of Hendrycks & Gimpel, ICLR 2017).

    p = softmax(f(x)),   score(x) = H(p) = − Σ_c p_c log p_c

Higher entropy = flatter prediction = more OOD, so no sign change is needed. With s = f − max_c f_c and
Z = Σ_c e^{s_c} it is computed as

    H = log Z − (Σ_c e^{s_c} s_c) / Z,   log Z = log1p(Σ_{c ≠ argmax} e^{s_c})

(log p_c = s_c − log Z): both terms are ≥ 0, so nothing cancels, and the non-maximal mass is summed on its own (as
GEN does), so a near-certain row keeps its tiny entropy; a probability that underflows to zero contributes
exactly 0 (e^{s} = 0 times a finite s) and very large logits stay finite. One pass over row blocks of
``LOGIT_BLOCK`` numbers in two reused buffers, in the input precision (float16 is scored in float32), so memory
stays a small fraction of the logits. No hyper-parameters and no fitting.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ._logit_only import LogitOnlyDetector, map_row_blocks


def _entropy_block(f: torch.Tensor, s: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """H(softmax(f)) of one row block, in the work buffers ``s`` and ``e`` (shaped like ``f``).

    With o = Z − 1 = Σ_{j ≠ argmax} e^{s_j} summed on its own (as GEN does), H = log1p(o) − Σ e^s s / (1 + o): on a
    near-certain row o is tiny and ``log(Z)`` of the rounded Z = 1 + o would lose it (5.6 % relative error at
    H ≈ 1e-6 in float32); ``log1p(o)`` keeps it. One maximal entry (s = 0, e^s = 1) is left out of o; tied maxima
    are the other entries equal to 1, kept in o."""
    torch.sub(f, f.amax(1, keepdim=True), out=s)            # s = f − max ≤ 0
    torch.exp(s, out=e)
    others = e.sum(1).sub_(1.0)                              # rounded Z − 1: used only where it is not tiny
    ones = (s == 0).sum(1)                                   # maximal entries (≥ 1)
    small = e.masked_fill(s == 0, 0.0).sum(1).add_(ones - 1)  # Σ over non-maximal entries + tied maxima beyond one
    others = torch.where(others < 0.5, small, others)
    weighted = e.mul_(s).sum(1)                             # Σ e^s s ≤ 0
    return torch.log1p(others).sub_(weighted.div_(others.add_(1.0)))  # log1p(o) − Σ e^s s / (1 + o)


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) per row, (N,), in row blocks (0·log 0 counts as 0)."""
    return map_row_blocks(logits, _entropy_block, buffers=2)


class Entropy(LogitOnlyDetector):
    name = "entropy"

    def _score(self, x) -> torch.Tensor:
        return softmax_entropy(as_float(x[self.logits]))
