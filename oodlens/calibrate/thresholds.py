"""Score thresholds with a guaranteed ID acceptance rate, and the realised acceptance rate on test data.

Accept an input (call it ID) when its score ≤ τ; τ is an order statistic ``S_(k)`` (k-th smallest) of ``n`` ID
calibration scores held out from fitting. For an acceptance target ``1 − α``:

* **marginal** (split conformal): ``k = ⌈(n + 1)(1 − α)⌉``. For an ID test point exchangeable with the calibration
  set, ``P(score ≤ τ) ≥ k/(n + 1) ≥ 1 − α`` (over calibration and test point together). Needs ``k ≤ n``, i.e.
  ``n ≥ 1/α − 1``. Flagging ``score > τ`` is exactly flagging ``marginal p ≤ α``.
* **beta** (PAC / training-conditional, exact): the ID acceptance rate ``F(S_(k))`` of a fixed calibration set is
  Beta(k, n + 1 − k)-distributed for continuous scores, and ``P(F(S_(k)) < 1 − α) = P(Binomial(n, 1 − α) ≥ k)``;
  ``k`` is the smallest order with that probability ≤ δ (Vovk 2012, "Conditional validity of inductive conformal
  predictors"; the beta-quantile rule). With probability ≥ 1 − δ over the calibration draw, the acceptance rate
  of future ID inputs is ≥ 1 − α.
* **dkw** (PAC, looser, closed form): ``k = ⌈n (1 − α + ε)⌉`` with ``ε = sqrt(log(2/δ) / (2n))``, since
  ``F(S_(k)) ≥ k/n − ε`` on the DKW event of probability ≥ 1 − δ (the same ε as the DKW p-values).

Ties in scores only raise the acceptance rate (``score ≤ τ`` includes them), so every guarantee still holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import OODLensError
from .._checks import as_scores, check_delta

GUARANTEES = ("marginal", "beta", "dkw")


@dataclass(frozen=True)
class Threshold:
    """Accept (ID) when ``score ≤ value``; ``value`` is the ``k``-th smallest of ``n`` calibration scores."""

    value: float
    k: int
    n: int
    acceptance: float
    guarantee: str
    delta: float | None

    def accept(self, scores: Any) -> torch.Tensor:
        """Boolean mask: True where the input is accepted as ID."""
        return as_scores(scores, "scores", batched=True) <= self.value

    def flag(self, scores: Any) -> torch.Tensor:
        """Boolean mask: True where the input is flagged as OOD."""
        return ~self.accept(scores)

    @property
    def statement(self) -> str:
        """The guarantee in words."""
        a = f"{100 * self.acceptance:g} %"
        if self.guarantee == "marginal":
            return (f"accepts ≥ {a} of ID inputs on average over calibration draws "
                    f"(k={self.k} of n={self.n}: ≥ {100 * self.k / (self.n + 1):.2f} %)")
        return (f"with probability ≥ {100 * (1 - self.delta):g} % over the calibration draw, accepts ≥ {a} "
                f"of future ID inputs (k={self.k} of n={self.n}, {self.guarantee} bound)")


def _binomial_upper_tails(n: int, q: float) -> np.ndarray:
    """``P(Binomial(n, q) ≥ k)`` for k = 1..n, from log-pmfs summed in log space (float64)."""
    j = torch.arange(n + 1, dtype=torch.float64)
    logpmf = (math.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
              + j * math.log(q) + (n - j) * math.log1p(-q))
    tails = torch.logcumsumexp(logpmf.flip(0), 0).flip(0).exp()  # P(Bin ≥ j), j = 0..n
    return tails[1:].numpy()


def _order(n: int, acceptance: float, guarantee: str, delta: float) -> int:
    if guarantee == "marginal":
        k = math.ceil((n + 1) * acceptance - 1e-9)
        if k > n:
            alpha = 1.0 - acceptance
            raise OODLensError(f"calibration set too small for {100 * acceptance:g} % acceptance: n={n}, need "
                               f"n ≥ 1/α − 1 = {math.ceil(1.0 / alpha - 1.0 - 1e-9)} (α = {alpha:g})")
        return max(k, 1)
    delta = check_delta(delta)
    if guarantee == "beta":
        tail = _binomial_upper_tails(n, acceptance)  # tail[k-1] = P(Bin(n, 1-α) ≥ k) = P(F(S_(k)) < 1-α)
        ks = np.arange(1, n + 1)
        ok = np.flatnonzero(tail <= delta)
        if ok.size == 0:
            need = math.ceil(math.log(delta) / math.log(acceptance))
            raise OODLensError(f"calibration set too small for {100 * acceptance:g} % acceptance with δ={delta:g} "
                               f"(beta bound): n={n}, need n ≥ {need}")
        return int(ks[ok[0]])
    if guarantee == "dkw":
        eps = math.sqrt(math.log(2.0 / delta) / (2.0 * n))
        k = math.ceil(n * (acceptance + eps) - 1e-9)
        if k > n:
            raise OODLensError(f"calibration set too small for {100 * acceptance:g} % acceptance with δ={delta:g} "
                               f"(DKW bound): n={n} gives ε={eps:.3g} > α={1 - acceptance:g}; "
                               f"need n ≥ {math.ceil(math.log(2 / delta) / (2 * (1 - acceptance) ** 2))}")
        return max(k, 1)
    raise OODLensError(f"unknown guarantee {guarantee!r}; use one of {', '.join(GUARANTEES)}")


def conformal_threshold(cal_scores: Any, acceptance: float = 0.95, guarantee: str = "marginal",
                        delta: float = 0.1) -> Threshold:
    """The threshold ``S_(k)`` accepting ``acceptance`` (= 1 − α) of ID inputs with the chosen ``guarantee``
    ('marginal', 'beta' or 'dkw'; δ is used by the last two). See the module docstring."""
    if not (isinstance(acceptance, (int, float)) and 0.0 < float(acceptance) < 1.0):
        raise OODLensError(f"acceptance must be in (0, 1), got {acceptance!r}")
    cal = as_scores(cal_scores, "calibration scores")
    n = int(cal.numel())
    if n == 0:
        raise OODLensError("the calibration set is empty (n = 0)")
    k = _order(n, float(acceptance), guarantee, delta)
    value = float(cal.sort().values[k - 1])
    return Threshold(value, k, n, float(acceptance), guarantee, None if guarantee == "marginal" else float(delta))


def acceptance_rate(threshold: Threshold | float, scores: Any) -> float:
    """Realised fraction of ``scores`` accepted (``score ≤ threshold``): on ID test data, compare with the target."""
    s = as_scores(scores, "scores")
    if s.numel() == 0:
        raise OODLensError("acceptance rate of an empty set is undefined")
    value = threshold.value if isinstance(threshold, Threshold) else float(threshold)
    return float((s <= value).double().mean())
