"""Monte-Carlo checks of the shift-robust p-values (the style of :mod:`oodlens.calibrate.simulation`): realised
false-alarm rate (FAR) ± standard error per method and shift strength.

* :func:`simulate_shift_validity` — covariate shift with a known density ratio. Calibration inputs
  ``X ~ N(0, I_d)``, the new site's inputs ``X ~ N(μ, I_d)`` with ``μ = shift · e_1``; the ID score is
  ``s = X_1 + 0.5 ε`` (ε ~ N(0, 1)), so the shift raises ID scores and the pooled (marginal) p-value over-flags.
  Semantic OOD at the new site scores ``s + ood_gap``. Methods: ``marginal`` (unweighted), ``weighted_oracle``
  (the true ratio ``w(x) = exp(μ·x − ‖μ‖²/2)``) and ``weighted`` (:class:`~oodlens.calibrate.weighted.DomainWeights`
  fitted on the calibration inputs and ``n_target`` unlabelled new-site inputs, cross-fitted and clipped).
* :func:`simulate_group_validity` — two groups whose ID scores differ (``N(0, 1)`` and ``N(shift, 1)``): the
  per-group FAR of the pooled p-value and of the Mondrian (group-conditional) one.

The standard error is the spread across repetitions (test points of one repetition share its calibration set).
``benchmarks/shift_validity.py`` prints both tables.
"""

from __future__ import annotations

import math
import warnings

import torch

from .._checks import check_delta
from ..errors import OODLensError
from .groups import counts_within
from .pvalues import count_at_least
from .weighted import DomainWeights, weighted_pvalues


def _summary(flags: torch.Tensor) -> tuple[float, float]:
    per_rep = flags.double().mean(-1)
    return float(per_rep.mean()), float(per_rep.std() / math.sqrt(per_rep.numel()))


def _check_settings(alpha: float, reps: int, counts: dict[str, int], values: dict[str, float]) -> None:
    """Simulation settings: α in (0, 1), ≥ 2 repetitions (the standard error needs two), positive integer sizes,
    finite shifts and gaps."""
    check_delta(alpha, "alpha")
    for name, v in {"reps": reps, **counts}.items():
        low = 2 if name == "reps" else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise OODLensError(f"{name} must be an integer ≥ {low}, got {v!r}")
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise OODLensError(f"{name} must be a finite number, got {v!r}")


def simulate_shift_validity(shifts: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5), n: int = 200, n_target: int = 200,
                            m: int = 100, reps: int = 200, alpha: float = 0.05, d: int = 2, ood_gap: float = 3.0,
                            estimate: bool = True, folds: int = 5, clip: float = 0.01, seed: int = 0) -> dict:
    """FAR and OOD detection rate at level ``alpha`` per method and shift (rows of a dict; see module docstring)."""
    shifts = tuple(shifts)
    if not shifts:
        raise OODLensError("shifts is empty: give at least one shift strength")
    _check_settings(alpha, reps, {"n": n, "n_target": n_target, "m": m, "d": d},
                    {"ood_gap": ood_gap, **{f"shifts[{i}]": v for i, v in enumerate(shifts)}})
    g = torch.Generator().manual_seed(int(seed))
    rows = []
    for shift in shifts:
        mu = torch.zeros(d, dtype=torch.float64)
        mu[0] = shift
        x_cal = torch.randn(reps, n, d, generator=g, dtype=torch.float64)
        x_new = torch.randn(reps, m, d, generator=g, dtype=torch.float64) + mu
        x_unl = torch.randn(reps, n_target, d, generator=g, dtype=torch.float64) + mu
        s_cal = x_cal[..., 0] + 0.5 * torch.randn(reps, n, generator=g, dtype=torch.float64)
        s_id = x_new[..., 0] + 0.5 * torch.randn(reps, m, generator=g, dtype=torch.float64)
        s_ood = s_id + ood_gap
        p_marg = {k: (1.0 + count_at_least(s_cal.sort(1).values, s).double()) / (n + 1.0)
                  for k, s in (("id", s_id), ("ood", s_ood))}
        oracle = lambda x: torch.exp(x @ mu - 0.5 * float(mu @ mu))  # noqa: E731
        p_or = {k: weighted_pvalues(s_cal, oracle(x_cal), s, oracle(x_new)) for k, s in (("id", s_id), ("ood", s_ood))}
        results = {"marginal": (p_marg, None), "weighted_oracle": (p_or, _ess(oracle(x_cal)))}
        if estimate:
            p_est = {"id": torch.empty_like(s_id), "ood": torch.empty_like(s_id)}
            ess = torch.empty(reps, dtype=torch.float64)
            for r in range(reps):
                with warnings.catch_warnings():  # the detection rate below measures what the warning predicts
                    warnings.filterwarnings("ignore", message="the new site is nearly separable")
                    dw = DomainWeights(folds=folds, clip=clip, seed=r).fit(x_cal[r], x_unl[r])
                w_new = dw.weights(x_new[r])
                for k, s in (("id", s_id), ("ood", s_ood)):
                    p_est[k][r] = weighted_pvalues(s_cal[r], dw.source_weights_, s[r], w_new)
                ess[r] = dw.ess_
            results["weighted"] = (p_est, ess)
        for method, (p, ess) in results.items():
            far, se = _summary(p["id"] <= alpha)
            det, det_se = _summary(p["ood"] <= alpha)
            rows.append({"method": method, "shift": shift, "far": far, "se": se, "detection": det,
                         "detection_se": det_se, "ess": float("nan") if ess is None else float(ess.mean())})
    return {"n": n, "n_target": n_target, "m": m, "reps": reps, "alpha": alpha, "d": d, "rows": rows}


def _ess(w: torch.Tensor) -> torch.Tensor:
    return w.sum(-1) ** 2 / (w * w).sum(-1)


def simulate_group_validity(n_per_group: int = 100, m: int = 100, shift: float = 1.0, reps: int = 500,
                            alpha: float = 0.05, seed: int = 0) -> dict:
    """Per-group FAR of pooled and Mondrian p-values: group 'A' scores N(0, 1), group 'B' N(shift, 1)."""
    _check_settings(alpha, reps, {"n_per_group": n_per_group, "m": m}, {"shift": shift})
    g = torch.Generator().manual_seed(int(seed))
    cal = torch.cat([torch.randn(reps, n_per_group, generator=g, dtype=torch.float64),
                     torch.randn(reps, n_per_group, generator=g, dtype=torch.float64) + shift], 1)
    codes = torch.cat([torch.zeros(n_per_group, dtype=torch.long), torch.ones(n_per_group, dtype=torch.long)])
    rows = []
    for code, name in ((0, "A"), (1, "B")):
        test = torch.randn(reps, m, generator=g, dtype=torch.float64) + code * shift
        pooled = (1.0 + count_at_least(cal.sort(1).values, test).double()) / (2 * n_per_group + 1.0)
        # Mondrian: counts within the group, one calibration set per repetition (rows offset into disjoint codes)
        rep_codes = (torch.arange(reps)[:, None] * 2 + codes[None, :]).reshape(-1)
        test_codes = (torch.arange(reps)[:, None] * 2 + code).expand(reps, m).reshape(-1)
        within = counts_within(cal.reshape(-1), rep_codes, test.reshape(-1), test_codes).reshape(reps, m)
        mondrian = (1.0 + within.double()) / (n_per_group + 1.0)
        for method, p in (("pooled", pooled), ("mondrian", mondrian)):
            far, se = _summary(p <= alpha)
            rows.append({"method": method, "group": name, "far": far, "se": se})
    return {"n_per_group": n_per_group, "m": m, "shift": shift, "reps": reps, "alpha": alpha, "rows": rows}


__all__ = ["simulate_group_validity", "simulate_shift_validity"]
