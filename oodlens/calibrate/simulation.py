"""Monte-Carlo checks of the guarantees, vectorised over repetitions (one calibration set per row).

Conformal p-values depend on the scores only through ranks, so uniform ID scores cover every continuous score
distribution. Each function returns plain figures; ``benchmarks/calibration_simulation.py`` prints them and
``tests/test_calibrate_simulation.py`` checks them against their Monte-Carlo error.

* :func:`simulate_validity` — ``P(p ≤ t)`` for ID test points (marginal over calibration and test point).
* :func:`simulate_fdr` — realised FDR and power of BH / Storey-BH on batches mixing ID and OOD scores.
* :func:`simulate_conditional` — for each calibration draw, the exact worst excess ``sup_t P(p ≤ t | cal) − t``
  (uniform scores: ``P(#{i: U_i ≥ s} = m | cal) = U_(n−m+1) − U_(n−m)``); the fraction of draws with no excess
  is the calibration-conditional coverage, ≥ 1 − δ for Simes and DKW.
* :func:`simulate_thresholds` — realised ID acceptance ``F(τ) = τ`` of each threshold rule per calibration draw.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import OODLensError

from .pvalues import count_at_least, pvalue_table
from .screening import false_discovery_proportion, screen
from .thresholds import conformal_threshold


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _sorted_uniform(reps: int, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(reps, n, generator=g, dtype=torch.float64).sort(1).values


def _positive_ints(**values: Any) -> None:
    """Raise naming the first argument that is not a positive integer (sizes and repetition counts)."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise OODLensError(f"{name} must be a positive integer, got {v!r}")


def simulate_validity(n: int = 100, m: int = 50, reps: int = 2000, ts: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2),
                      methods: tuple[str, ...] = ("marginal", "simes", "dkw"), delta: float = 0.1,
                      seed: int = 0) -> dict:
    """``P(p ≤ t)`` over reps × m ID test points, with a Monte-Carlo standard error from the spread across reps
    (test points of one rep share the calibration set, so they are not independent)."""
    _positive_ints(n=n, m=m, reps=reps)
    g = _gen(seed)
    cal = _sorted_uniform(reps, n, g)
    test = torch.rand(reps, m, generator=g, dtype=torch.float64)
    counts = count_at_least(cal, test)
    out = {"n": n, "m": m, "reps": reps, "rows": []}
    for method in methods:
        p = pvalue_table(n, method, delta)[counts]
        for t in ts:
            per_rep = (p <= t).double().mean(1)
            out["rows"].append({"method": method, "t": t, "rate": float(per_rep.mean()),
                                "se": float(per_rep.std() / math.sqrt(reps))})
    return out


def simulate_fdr(n: int = 200, m: int = 100, ood_fraction: float = 0.2, shift: float = 2.5, reps: int = 500,
                 alphas: tuple[float, ...] = (0.05, 0.1, 0.2), seed: int = 0) -> dict:
    """BH and Storey-BH on marginal conformal p-values: ID scores N(0, 1), OOD scores N(shift, 1)."""
    _positive_ints(n=n, m=m, reps=reps)
    g = _gen(seed)
    cal = torch.randn(reps, n, generator=g, dtype=torch.float64).sort(1).values
    m1 = int(round(ood_fraction * m))
    is_ood = torch.zeros(m, dtype=torch.bool)
    is_ood[:m1] = True
    test = torch.randn(reps, m, generator=g, dtype=torch.float64) + shift * is_ood.double()
    p = (1.0 + count_at_least(cal, test).double()) / (n + 1.0)
    out = {"n": n, "m": m, "n_ood": m1, "shift": shift, "reps": reps, "rows": []}
    for method in ("bh", "storey"):
        for alpha in alphas:
            res = screen(p, alpha, method)
            fdp = false_discovery_proportion(res.rejected, is_ood)
            power = res.rejected[:, is_ood].double().mean(1)
            out["rows"].append({"method": method, "alpha": alpha, "fdr": float(fdp.mean()),
                                "se": float(fdp.std() / math.sqrt(reps)), "power": float(power.mean()),
                                "bound": alpha * (m - m1) / m})
    return out


def conditional_excess(cal_sorted: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Exact ``sup_t (P(p ≤ t | cal) − t)`` per row for uniform scores, with ``p = table[#{i: U_i ≥ s}]``.

    The count ``m`` has probability ``U_(n−m+1) − U_(n−m)`` (``U_(0) = 0``, ``U_(n+1) = 1``); ``table`` is
    non-decreasing in ``m``, so the conditional CDF at ``table[m]`` is a cumulative sum over counts ≤ m (at the
    last count of a tie group it is exact, elsewhere smaller), and the sup over t is attained at those values."""
    reps, n = cal_sorted.shape
    zeros = torch.zeros(reps, 1, dtype=cal_sorted.dtype)
    edges = torch.cat([zeros, cal_sorted, zeros + 1.0], 1)  # U_(0..n+1)
    spacings = edges[:, 1:] - edges[:, :-1]  # j = 0..n: P(#{U_i < s} = j)
    prob_m = spacings.flip(1)  # m = n - j
    cdf = prob_m.cumsum(1)
    return (cdf - table[None, :]).amax(1)


def simulate_conditional(n: int = 200, reps: int = 1000, delta: float = 0.1,
                         methods: tuple[str, ...] = ("marginal", "simes", "dkw"), seed: int = 0) -> dict:
    """Fraction of calibration draws on which ``P(p ≤ t | cal) ≤ t`` for every t (exact per draw)."""
    _positive_ints(n=n, reps=reps)
    cal = _sorted_uniform(reps, n, _gen(seed))
    out = {"n": n, "reps": reps, "delta": delta, "rows": []}
    for method in methods:
        excess = conditional_excess(cal, pvalue_table(n, method, delta))
        valid = (excess <= 1e-12).double()
        out["rows"].append({"method": method, "coverage": float(valid.mean()),
                            "se": float(valid.std() / math.sqrt(reps)), "mean_excess": float(excess.clamp_min(0).mean())})
    return out


def simulate_thresholds(n: int = 1000, reps: int = 1000, acceptance: float = 0.95, delta: float = 0.1,
                        seed: int = 0) -> dict:
    """Per calibration draw, the ID acceptance ``F(S_(k)) = S_(k)`` of each rule (uniform scores)."""
    _positive_ints(n=n, reps=reps)
    cal = _sorted_uniform(reps, n, _gen(seed))
    out = {"n": n, "reps": reps, "acceptance": acceptance, "delta": delta, "rows": []}
    for guarantee in ("marginal", "beta", "dkw"):
        k = conformal_threshold(torch.arange(n, dtype=torch.float64), acceptance, guarantee, delta).k
        acc = cal[:, k - 1]
        ok = (acc >= acceptance).double()
        out["rows"].append({"guarantee": guarantee, "k": k, "mean_acceptance": float(acc.mean()),
                            "se": float(acc.std() / math.sqrt(reps)), "frac_at_target": float(ok.mean()),
                            "frac_se": float(ok.std() / math.sqrt(reps))})
    return out
