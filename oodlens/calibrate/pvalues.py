"""Conformal p-values from any detector's scores (higher = more OOD), and the OOD degree they give.

Split-conformal outlier testing (Bates, Candès, Lei, Romano & Sesia, "Testing for outliers with conformal
p-values", Annals of Statistics 51(1), 2023). Calibration scores ``s_1..s_n`` come from in-distribution data held
out from fitting; for a test score ``s``:

* **marginal** — ``p(x) = (1 + #{i : s_i ≥ s}) / (n + 1)``.
  Guarantee: if the test point is exchangeable with the calibration points (it is ID), ``P(p(x) ≤ t) ≤ t`` for
  every ``t ∈ [0, 1]``, the probability taken over the calibration set *and* the test point together.
  Ties count against the test point (``≥``), which only makes p larger (conservative).

* **calibration-conditional** (CCV; Bates et al., Section 3) — ``p_ccv = h(p_marg)`` with an increasing
  correction ``h`` built from a simultaneous upper bound ``b_1 ≤ … ≤ b_n`` on the order statistics of ``n`` i.i.d.
  uniforms: ``P(U_(i) ≤ b_i for all i) ≥ 1 − δ``, and ``h(i / (n+1)) = b_i`` (``i = 1..n``), ``h(1) = 1``.
  Guarantee (i.i.d. data): with probability ≥ 1 − δ over the draw of the calibration set,
  ``P(p_ccv(x) ≤ t | calibration set) ≤ t`` simultaneously for every ``t ∈ (0, 1)``.
  Writing ``m = #{i : s_i ≥ s}`` (so ``p_marg = (1 + m)/(n + 1)``):

  - **Simes** (generalised Simes inequality of order ``k``; the paper's default ``k = ⌊n/2⌋``):
    ``a_i = δ^{1/k} · (i(i−1)…(i−k+1) / (n(n−1)…(n−k+1)))^{1/k}`` for ``i ≥ k`` and ``a_i = 0`` for ``i < k``
    give ``P(U_(i) ≥ a_i ∀i) ≥ 1 − δ``; by symmetry ``b_i = 1 − a_{n+1−i}``, so
    ``p_simes = 1 − a_{n−m}`` for ``m < n`` and ``1`` for ``m = n``.
  - **DKW** (Dvoretzky–Kiefer–Wolfowitz inequality with Massart's constant):
    ``p_dkw = min(1, p_marg + ε)``, ``ε = sqrt(log(2/δ) / (2n))``.

  Both match the reference implementation (github.com/msesia/conditional-conformal-pvalues, ``calibrate_ccv``:
  ``betainv_simes`` with ``k = int(n / 2)``, and ``pval + epsilon`` for DKW), computed here from the integer
  count ``m`` (a lookup table of ``n + 1`` values) rather than from floating ``(n + 1)(1 − p)``. One deliberate
  difference: for ``m = n`` (``p_marg = 1``) the reference code returns ``1 − a_1``, which differs from the
  paper's ``h(1) = 1`` only when ``k = 1`` — and would then break validity at ``t = 1 − a_1``; here it is 1.

The **OOD degree** is ``1 − p`` in [0, 1]. For the marginal p-value it equals ``#{i : s_i < s} / (n + 1)``, so a
degree of 0.992 reads "more atypical than about 99.2 % of the in-distribution calibration data"
(:func:`describe_degree` states the exact fraction).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._checks import as_scores, as_tensor, check_delta, check_finite
from ..errors import OODLensError
from .thresholds import conformal_threshold

PVALUE_METHODS = ("marginal", "simes", "dkw")


def count_at_least(cal_sorted: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``#{i : cal_i ≥ s}`` for every score, by binary search on ascending calibration scores.

    ``cal_sorted`` (n,) with ``scores`` of any shape, or ``cal_sorted`` (..., n) with ``scores`` (..., m) sharing
    the leading dimensions (one calibration set per row, used to vectorise simulations)."""
    cal_sorted = cal_sorted.to(scores.device, scores.dtype)
    n = cal_sorted.shape[-1]
    if cal_sorted.ndim == 1:
        below = torch.searchsorted(cal_sorted, scores.reshape(-1), side="left").reshape(scores.shape)
    else:
        if cal_sorted.shape[:-1] != scores.shape[:-1]:
            raise OODLensError(f"batched calibration scores {tuple(cal_sorted.shape)} and test scores "
                               f"{tuple(scores.shape)} disagree on their leading dimensions")
        below = torch.searchsorted(cal_sorted.contiguous(), scores.contiguous(), side="left")
    return n - below


def pvalue_table(n: int, method: str = "marginal", delta: float = 0.1, k: int | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """The p-value for each count ``m = #{i : s_i ≥ s}`` in ``0..n``: a float64 tensor of n + 1 values,
    non-decreasing in ``m``. ``method``: 'marginal', 'simes' (order ``k``, default ``max(1, n // 2)``) or 'dkw'."""
    if method not in PVALUE_METHODS:
        raise OODLensError(f"unknown p-value method {method!r}; use one of {', '.join(PVALUE_METHODS)}")
    if isinstance(n, bool) or not isinstance(n, int):
        raise OODLensError(f"the calibration set size n must be an integer, got {n!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int)):
        raise OODLensError(f"Simes order k must be an integer in 1..n, got {k!r}")
    if n < 1:
        raise OODLensError("the calibration set is empty (n = 0)")
    table = _table_cpu(n, method, delta, k)  # tiny: computed on the CPU so every device gets identical values
    return table if device is None else table.to(device)


def _table_cpu(n: int, method: str, delta: float, k: int | None) -> torch.Tensor:
    m = torch.arange(n + 1, dtype=torch.float64)
    marginal = (1.0 + m) / (n + 1.0)
    if method == "marginal":
        return marginal
    delta = check_delta(delta)
    if method == "dkw":
        return (marginal + math.sqrt(math.log(2.0 / delta) / (2.0 * n))).clamp_max(1.0)
    k = max(1, n // 2) if k is None else int(k)
    if not 1 <= k <= n:
        raise OODLensError(f"Simes order k must be in 1..n={n}, got {k}")
    i = torch.arange(1, n + 1, dtype=torch.float64)  # a_1..a_n
    log_ratio = (torch.lgamma(i + 1) - torch.lgamma((i - k + 1).clamp_min(1))
                 - (math.lgamma(n + 1) - math.lgamma(n - k + 1))) / k
    a = torch.where(i >= k, torch.exp(math.log(delta) / k + log_ratio), torch.zeros_like(i))
    table = torch.ones(n + 1, dtype=torch.float64)
    table[:n] = 1.0 - a.flip(0)  # count m < n uses a_{n-m}
    return table


def conformal_pvalues(cal_scores: Any, scores: Any, method: str = "marginal", delta: float = 0.1,
                      k: int | None = None) -> torch.Tensor:
    """Conformal p-values (float64, same shape as ``scores``) of test scores against calibration scores.

    Higher score = more OOD. ``cal_scores`` (n,) — or (..., n) with ``scores`` (..., m) for one calibration set
    per leading index. See the module docstring for the formulas and guarantees of each ``method``."""
    cal = as_scores(cal_scores, "calibration scores", batched=True)
    s = as_scores(scores, "scores", batched=True).to(cal.device)
    counts = count_at_least(cal.sort(-1).values, s)
    return pvalue_table(cal.shape[-1], method, delta, k, device=cal.device)[counts]


def adjust_pvalues(p_marginal: Any, n: int, method: str, delta: float = 0.1, k: int | None = None) -> torch.Tensor:
    """Map marginal conformal p-values computed with ``n`` calibration points to ``method`` ('simes', 'dkw')."""
    p = as_scores(p_marginal, "marginal p-values", batched=True)
    counts_f = p * (n + 1) - 1
    counts = counts_f.round()
    if bool(((counts_f - counts).abs() > 1e-6).any()) or bool((counts < 0).any()) or bool((counts > n).any()):
        raise OODLensError(f"these are not marginal conformal p-values from n={n} calibration points "
                           f"(expected multiples of 1/{n + 1} in [1/{n + 1}, 1])")
    return pvalue_table(n, method, delta, k, device=p.device)[counts.long()]


def ood_degree(pvalues: Any) -> torch.Tensor:
    """OOD degree ``1 − p`` in [0, 1]: 0 = as typical as any ID data, → 1 = more atypical than all of it."""
    p = as_scores(pvalues, "p-values", batched=True)
    if bool(((p < 0) | (p > 1)).any()):
        raise OODLensError("p-values must lie in [0, 1]")
    return 1.0 - p


def _pct(x: float) -> str:
    s = f"{100.0 * x:.1f}"
    if s == "100.0" and x < 1.0:
        s = "99.9"
    if s == "0.0" and x > 0.0:
        s = "0.1"
    return s


def describe_degree(below: Any, n: int, degree: Any | None = None) -> list[str]:
    """Plain-language reading per sample from ``below = #{i : s_i < s}`` (calibration scores strictly less OOD).

    E.g. "OOD degree 0.992: more atypical than 99.2 % of 500 in-distribution calibration samples"."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OODLensError(f"describe_degree: n (calibration set size) must be a positive integer, got {n!r}")
    counts = as_tensor(below, "counts").reshape(-1)
    if counts.is_floating_point() and not bool((counts == counts.round()).all()):
        raise OODLensError("describe_degree: counts must be whole numbers (calibration scores below each score)")
    if counts.numel() and (int(counts.min()) < 0 or int(counts.max()) > n):
        raise OODLensError(f"describe_degree: counts must lie in 0..n={n}, got {int(counts.min())}..{int(counts.max())}")
    b = counts.tolist()
    d = [1.0 - (n - int(c) + 1.0) / (n + 1.0) for c in b] if degree is None else \
        as_scores(degree, "degree").reshape(-1).tolist()
    out = []
    for c, deg in zip(b, d):
        c = int(c)
        if c == n:
            what = f"more atypical than all {n} in-distribution calibration samples"
        elif c == 0:
            what = f"no more atypical than any of {n} in-distribution calibration samples"
        else:
            what = f"more atypical than {_pct(c / n)} % of {n} in-distribution calibration samples"
        out.append(f"OOD degree {deg:.3f}: {what}")
    return out


class ConformalCalibrator:
    """Conformal p-values, OOD degrees and thresholds from one set of ID calibration scores.

    >>> cal = ConformalCalibrator(detector.score(id_calibration), method="marginal")
    >>> p = cal.pvalues(detector.score(batch))          # valid p-values, small = OOD
    >>> cal.degree(...), cal.describe(...), cal.threshold(acceptance=0.95)
    """

    def __init__(self, cal_scores: Any, method: str = "marginal", delta: float = 0.1, k: int | None = None):
        cal = as_scores(cal_scores, "calibration scores")
        if cal.numel() == 0:
            raise OODLensError("the calibration set is empty (n = 0)")
        self.scores = cal.sort().values
        self.n = int(cal.numel())
        self.method, self.delta, self.k = method, float(delta), k
        self.table = pvalue_table(self.n, method, delta, k, device=cal.device)

    def counts(self, scores: Any) -> torch.Tensor:
        """``#{i : s_i ≥ s}`` per score."""
        s = as_scores(scores, "scores")
        return count_at_least(self.scores.to(s.device), s)

    def pvalues(self, scores: Any, method: str | None = None) -> torch.Tensor:
        """p-values (float64) of ``scores``; ``method`` overrides the calibrator's (same δ and k)."""
        table = self.table if method is None or method == self.method else \
            pvalue_table(self.n, method, self.delta, self.k)
        c = self.counts(scores)
        return table.to(c.device)[c]

    def degree(self, scores: Any) -> torch.Tensor:
        return 1.0 - self.pvalues(scores)

    def describe(self, scores: Any) -> list[str]:
        """One plain-language line per score (see :func:`describe_degree`)."""
        c = self.counts(scores)
        return describe_degree(self.n - c, self.n, 1.0 - self.table.to(c.device)[c])

    @property
    def min_pvalue(self) -> float:
        """The smallest p-value this calibration set can give (for a score above every calibration score)."""
        return float(self.table[0])

    def check_level(self, alpha: float) -> None:
        """Raise unless some score can reach ``p ≤ alpha`` (otherwise nothing could ever be flagged)."""
        if not 0.0 < alpha < 1.0:
            raise OODLensError(f"level must be in (0, 1), got {alpha}")
        if self.min_pvalue > alpha:
            need = "n ≥ 1/α − 1 = " + f"{math.ceil(1.0 / alpha - 1.0 - 1e-9)}" if self.method == "marginal" else \
                f"a larger n for δ={self.delta}"
            raise OODLensError(f"calibration set too small for level {alpha:g}: with n={self.n} and {self.method} "
                               f"p-values the smallest p-value is {self.min_pvalue:.4g} > {alpha:g}; need {need}")

    def threshold(self, acceptance: float = 0.95, guarantee: str = "marginal", delta: float | None = None):
        """Score threshold keeping ``acceptance`` of ID inputs (see :func:`~oodlens.calibrate.conformal_threshold`)."""
        return conformal_threshold(self.scores, acceptance, guarantee, self.delta if delta is None else delta)
