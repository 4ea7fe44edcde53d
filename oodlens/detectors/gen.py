"""GEN, generalized entropy (Liu, Lochman, Zach — CVPR 2023, "GEN: Pushing the Limits of Softmax-Based
Out-of-Distribution Detection").

    p = softmax(f(x)),   p_(1) ≥ p_(2) ≥ … the sorted probabilities,   M' = min(M, C)
    score(x) = G_γ(p) = Σ_{j=1..M'} p_(j)^γ · (1 − p_(j))^γ

The paper's confidence is −G_γ (higher = more ID); its negation G_γ is returned, so higher = more OOD.
Defaults γ = 0.1, M = 100 (capped at the number of classes C) as in the paper and the reference code
(OpenOOD ``GENPostprocessor``, which sorts the softmax and keeps its M largest entries); ``param_grid`` follows
the spirit of OpenOOD's sweep (γ ∈ {0.01, 0.1, 0.5, 1, 2, 5, 10}, M ∈ {10, 50, 100, 200, 500, 1000}) trimmed to
values that differ on typical class counts.

Numerics (same formula, computed more exactly than the reference's float32 ``p**γ * (1-p)**γ``): every term is
``exp(γ·(log p + log(1 − p)))`` in log space. With s = f − max f and Z = Σ exp(s): log p_j = s_j − log Z; off the
argmax, log(1 − p_j) = log(Z − e^{s_j}) − log Z with Z − e^{s_j} ≥ 1; for the top class
``log(1 − p_max) = log(Z − 1) − log Z`` from the sum of the non-maximal exps (a log-sum-exp of the other classes
where that sum underflows). So a confident prediction whose ``1 − p_max`` is below float precision still gets its
(small, non-zero) term instead of exactly 0, and huge logits stay finite. Computed in the input precision in row
blocks of about 2²⁰ numbers (two block-sized buffers, updated in place); with M ≥ C no sorting is needed. The
argmax of every row comes first, from :func:`._argmax.row_argmax` (on a large CPU input a compiled kernel: torch's
max-with-index took a third of the score).
"""

from __future__ import annotations

import numbers

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._argmax import row_argmax, warm_up_row_argmax
from ._blocks import rows_within
from .base import Detector
from .temp_scaled_msp import log1m_max_softmax


#: rows per block: about 2^20 numbers (few, large operations; two reused (rows × C) work buffers)
_BLOCK = 1 << 20
#: below this, the sum of the non-maximal exp(f_j − max f) has lost precision to underflow: use log-sum-exp
_UNDERFLOW = 1e-30


def _gen_block(f: torch.Tensor, idx: torch.Tensor, gamma: float, m: int, s: torch.Tensor, e: torch.Tensor
               ) -> torch.Tensor:
    """``generalized_entropy`` of one row block with its argmax ``idx`` (rows, 1), computed in the (rows × C) work
    buffers ``s`` and ``e``.

    With Z = Σ_j exp(f_j − max f): log p_j = s_j − log Z (s = f − max f) and, off the argmax,
    log(1 − p_j) = log(Z − e^{s_j}) − log Z with Z − e^{s_j} ≥ 1 (no cancellation); the common factor
    Z^{−2γ} of every term is applied to the row sum.
    """
    c = f.shape[1]
    mx = f.amax(1, keepdim=True)                             # = f[idx], and cheaper than a gather
    torch.sub(f, mx, out=s)                                  # log p + log Z; 0 at the argmax
    torch.exp(s, out=e).scatter_(1, idx, 0.0)                # exp of the non-maximal entries
    others = e.sum(1, keepdim=True)                          # Z − 1 = Σ_{j ≠ argmax} exp(f_j − max f)
    log_z = torch.log1p(others)
    # log(1 − p_max) = log(Z − 1) − log Z, exact even when 1 − p_max is below float precision
    log1m_top = others.log() - log_z
    low = (others[:, 0] < _UNDERFLOW).nonzero().flatten()
    if low.numel():                                          # the non-maximal exps underflowed: log-sum-exp
        log1m_top[low, 0] = log1m_max_softmax(f[low])
    if m >= c:                                               # every class counts: no selection needed
        t = torch.sub(others + 1.0, e, out=e).log_().add_(s)  # log(Z − e^s) + s = log p + log(1 − p) + 2 log Z
        t.scatter_(1, idx, log1m_top + log_z)                # the argmax term: log p_max + log(1 − p_max) + 2 log Z
        return t.mul_(gamma).exp_().sum(1).mul_(torch.exp(-2.0 * gamma * log_z[:, 0]))
    logp = s.topk(m, dim=1).values.sub_(log_z)               # descending: column 0 is the predicted class
    t = torch.exp(logp, out=e[:, :m]).neg_().log1p_().add_(logp)
    t[:, :1] = logp[:, :1] + log1m_top
    return t.mul_(gamma).exp_().sum(1)


def generalized_entropy(logits: torch.Tensor, gamma: float, m: int, block: int = _BLOCK) -> torch.Tensor:
    """Σ over the ``m`` largest softmax probabilities of p^γ (1 − p)^γ, per row (N,), in row blocks that reuse
    two work buffers (fresh large allocations cost more than the arithmetic here)."""
    n, c = logits.shape
    out = torch.empty(n, dtype=logits.dtype, device=logits.device)
    rows = rows_within(n, c, block)
    s, e = (torch.empty(rows, c, dtype=logits.dtype, device=logits.device) for _ in range(2))
    idx = row_argmax(logits)[:, None]  # of all rows at once (the compiled kernel's threads start once)
    for i in range(0, n, rows):
        r = min(rows, n - i)
        out[i:i + r] = _gen_block(logits[i:i + r], idx[i:i + r], gamma, m, s[:r], e[:r])
    return out


class GEN(Detector):
    name = "gen"
    param_grid = {"gamma": [0.01, 0.05, 0.1, 0.5, 1.0], "M": [5, 10, 50, 100, 1000]}
    score_only_params = frozenset({"gamma", "M"})

    def __init__(self, gamma: float = 0.1, M: int = 100, logits: str = "logits"):
        self.gamma = gamma
        self.M = M
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.logits,)

    def _check_params(self) -> None:
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, numbers.Real) or not 0 < self.gamma < float("inf"):
            raise OODLensError(f"GEN gamma must be > 0, got {self.gamma}")
        if isinstance(self.M, bool) or not isinstance(self.M, numbers.Real) or int(self.M) != self.M or self.M < 1:
            raise OODLensError(f"GEN M (number of top probabilities) must be an integer >= 1, got {self.M!r}")

    def _fit(self, train, labels, head, model) -> None:
        self._check_params()
        warm_up_row_argmax(as_float(train[self.logits]))

    def _score(self, x) -> torch.Tensor:
        self._check_params()
        return generalized_entropy(as_float(x[self.logits]), float(self.gamma), int(self.M))
