"""Rules that combine K OOD scores per input into one (higher = more OOD), from ID calibration scores.

p-value rules first turn each score into a marginal conformal p-value against that member's ID calibration
scores, ``p_j = (1 + #{i : c_ij ≥ s_j}) / (n + 1)``, then merge the K p-values (p_(1) ≤ … ≤ p_(K) sorted):

==============  ===============================================  =============================================
rule            combined p-value                                 valid when
==============  ===============================================  =============================================
``fisher``      ``P(χ²_{2K} ≥ −2 Σ log p_j)``                    p-values independent (Fisher 1925); with
                                                                 dependent detectors it is a score, not a p
``bonferroni``  ``min(1, K · p_(1))`` (min-p)                    any dependence
``simes``       ``min(1, min_j K p_(j) / j)``                    independence or PRDS (Simes 1986)
``harmonic``    ``min(1, c_K · K / Σ 1/p_j)``, ``c_K = e ln K``   any dependence (Vovk & Wang, Biometrika 2020:
                for K ≥ 3, ``c_2 = 2``, ``c_1 = 1``               harmonic mean × e ln K; for K = 2 it is ≥ Bonferroni)
``mean``        ``min(1, 2 · mean_j p_j)`` (``c_1 = 1``)          any dependence (Rüschendorf 1982; Vovk & Wang 2020)
==============  ===============================================  =============================================

The fused *score* is ``−log`` of the combined p-value before the clip at 1 (a monotone map, so inputs that all
rules call "fully typical" keep their order). The χ² tail uses the closed form for even degrees of freedom,
``P(χ²_{2K} ≥ 2x) = e^{−x} Σ_{i<K} x^i / i!``, in log space.

Other rules:

* ``zscore`` — ``mean_j (s_j − μ_j) / σ_j`` with each member's ID calibration mean and standard deviation
  (unbiased, ``n − 1``); ``zscore_max`` — ``max_j (s_j − μ_j) / σ_j`` (the most unusual member decides).
* ``logistic`` — ``b + Σ_j w_j (s_j − μ_j) / σ_j`` with ``(w, b)`` from an L2-regularised logistic regression of
  ID validation (0) vs validation OOD (1) with balanced class weights: the minimiser of
  ``½‖w‖² + C Σ_i c_i log(1 + exp(−y±_i (w·z_i + b)))``, ``c_i = N / (2 N_{class(i)})``, intercept not
  penalised — scikit-learn's ``LogisticRegression(C=logistic_c, class_weight="balanced")`` objective, solved
  here by Newton's method in float64 (K + 1 unknowns).
  It learns from OOD data, so it may only be fitted on **validation** data; anything else raises.

Whatever the rule, the fused score is a score: :class:`~oodlens.calibrate.ConformalCalibrator` on held-out ID
data turns it into a valid p-value.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from .._checks import as_tensor, check_finite
from ..calibrate.pvalues import count_at_least, pvalue_table
from ..errors import NotFittedError, OODLensError

P_RULES = ("fisher", "bonferroni", "simes", "harmonic", "mean")
RULES = P_RULES + ("zscore", "zscore_max", "logistic")
#: classic statistics of member p-values, monotone in a combined p-value (same ranking, other numbers):
#: ``fisher`` −2 Σ_j log p_j (Fisher's χ²_{2K} statistic), ``min_p`` −log min_j p_j (Bonferroni's, before × K)
P_STATISTICS = ("fisher", "min_p")


def check_rule(method: str) -> str:
    if method not in RULES:
        raise OODLensError(f"unknown fusion method {method!r}; use one of {', '.join(RULES)}")
    return method


def check_logistic_c(c: Any) -> float:
    """The logistic rule's inverse regularisation strength: a finite number > 0."""
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or not c > 0:
        raise OODLensError(f"logistic_c must be a finite number > 0, got {c!r}")
    return float(c)


def stack_scores(scores: Any, name: str = "member scores") -> tuple[torch.Tensor, list[str]]:
    """Member scores as an (N, K) float64 tensor and the member names. Accepts an (N, K) array, a sequence of
    K arrays (N,), or a mapping name → (N,). Members that disagree on N raise, naming each one's N."""
    if isinstance(scores, Mapping):
        names, cols = [str(k) for k in scores], list(scores.values())
    elif isinstance(scores, (torch.Tensor,)) or hasattr(scores, "ndim") and getattr(scores, "ndim", 0) == 2:
        t = as_tensor(scores, name)
        if t.ndim != 2:
            raise OODLensError(f"{name} must be (N, K), got shape {tuple(t.shape)}")
        names, cols = [f"member{j}" for j in range(t.shape[1])], [t[:, j] for j in range(t.shape[1])]
    elif isinstance(scores, Sequence) and not isinstance(scores, str):
        names, cols = [f"member{j}" for j in range(len(scores))], list(scores)
    else:
        raise OODLensError(f"{name} must be an (N, K) array, a list of (N,) arrays or a dict, "
                           f"got {type(scores).__name__}")
    if not cols:
        raise OODLensError(f"{name}: no members to fuse")
    tensors = []
    for nm, c in zip(names, cols):
        t = as_tensor(c, f"{name} {nm!r}").detach()
        if t.ndim != 1:
            raise OODLensError(f"{name} {nm!r} must be 1-D (N,), got shape {tuple(t.shape)}")
        tensors.append(t)
    sizes = {nm: int(t.shape[0]) for nm, t in zip(names, tensors)}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{k}: N={v}" for k, v in sizes.items())
        raise OODLensError(f"{name} disagree on their inputs (different N): {listing}")
    device = tensors[0].device
    out = torch.stack([t.to(device, torch.float64) for t in tensors], 1)
    check_finite(out, name)
    return out, names


def _harmonic_constant(k: int) -> float:
    return 1.0 if k == 1 else 2.0 if k == 2 else math.e * math.log(k)


def log_combined_pvalue(p: torch.Tensor, method: str) -> torch.Tensor:
    """log of the combined p-value (before clipping at 1) of p-values ``p`` (N, K) in (0, 1]."""
    k = p.shape[1]
    if method == "fisher":
        x = -torch.log(p).sum(1)  # half the chi-square statistic
        i = torch.arange(k, dtype=p.dtype, device=p.device)
        terms = torch.xlogy(i[None, :], x[:, None]) - torch.lgamma(i + 1)[None, :]
        return -x + torch.logsumexp(terms, 1)
    if method == "bonferroni":
        return math.log(k) + torch.log(p.amin(1))
    if method == "simes":
        j = torch.arange(1, k + 1, dtype=p.dtype, device=p.device)
        return (math.log(k) + torch.log(p.sort(1).values) - torch.log(j)).amin(1)
    if method == "harmonic":
        return math.log(_harmonic_constant(k) * k) - torch.log((1.0 / p).sum(1))
    if method == "mean":
        return math.log(1.0 if k == 1 else 2.0) + torch.log(p.mean(1))
    raise OODLensError(f"{method!r} is not a p-value combination rule; use one of {', '.join(P_RULES)}")


def combine_pvalues(pvalues: Any, method: str = "fisher") -> torch.Tensor:
    """Combined p-value (N,) of K p-values per input (an (N, K) array, a list or a dict of (N,) arrays)."""
    p, _ = stack_scores(pvalues, "p-values")
    if bool(((p <= 0) | (p > 1)).any()):
        raise OODLensError("p-values to combine must lie in (0, 1]")
    return log_combined_pvalue(p, method).exp().clamp_max(1.0)


def fit_rule(id_scores: torch.Tensor, method: str, ood_scores: torch.Tensor | None = None,
             split: str = "validation", logistic_c: float = 1.0, names: Sequence[str] | None = None
             ) -> dict[str, torch.Tensor]:
    """Fitted state of a rule from ID calibration scores (n, K) (and validation OOD scores for 'logistic').
    ``split`` names where the data comes from; the logistic rule accepts only 'validation'."""
    check_rule(method)
    n, k = id_scores.shape
    names = list(names) if names is not None else [f"member{j}" for j in range(k)]
    if n < 2:
        raise OODLensError(f"fusion needs at least 2 ID calibration samples, got {n}")
    mean = id_scores.mean(0)
    std = id_scores.std(0)
    if method in ("zscore", "zscore_max", "logistic"):
        flat = [names[j] for j in range(k) if not float(std[j]) > 0.0]
        if flat:
            raise OODLensError(f"cannot standardise member(s) {flat}: their ID calibration scores are constant")
    state = {"cal_sorted": id_scores.T.sort(1).values.contiguous(), "mean": mean, "std": std}
    if method == "logistic":
        if split != "validation":
            raise OODLensError(f"the logistic fusion rule learns from OOD data and may only be fitted on validation "
                               f"data (ID validation vs validation OOD), not on {split!r}")
        if ood_scores is None or ood_scores.shape[0] == 0:
            raise OODLensError("the logistic fusion rule needs validation OOD data: "
                               "fit_validation(id_val, labels, ood_val) with ood_val given")
        if ood_scores.shape[1] != k:
            raise OODLensError(f"validation OOD has {ood_scores.shape[1]} member scores, ID has {k}")
        z = torch.cat([(id_scores - mean) / std, (ood_scores - mean) / std])
        y = torch.cat([torch.zeros(n, dtype=z.dtype, device=z.device),
                       torch.ones(ood_scores.shape[0], dtype=z.dtype, device=z.device)])
        w, b = logistic_regression(z, y, check_logistic_c(logistic_c))
        state["coef"], state["intercept"] = w, b.reshape(1)
    return state


def logistic_regression(z: torch.Tensor, y: torch.Tensor, c: float = 1.0, max_iter: int = 100,
                        tol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced-class-weight L2 logistic regression (see the module docstring) by damped Newton steps:
    returns ``(w (K,), b ())``. ``z`` (N, K), ``y`` (N,) in {0, 1}."""
    if c <= 0:
        raise OODLensError(f"logistic_c must be > 0, got {c}")
    n = z.shape[0]
    n1 = float(y.sum())
    if n1 == 0 or n1 == n:
        raise OODLensError("logistic fusion needs both ID and OOD validation samples")
    cw = torch.where(y > 0.5, n / (2.0 * n1), n / (2.0 * (n - n1))) * c
    x = torch.cat([z, torch.ones(n, 1, dtype=z.dtype, device=z.device)], 1)
    pen = torch.ones(x.shape[1], dtype=z.dtype, device=z.device)
    pen[-1] = 0.0
    sign = 2.0 * y - 1.0

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return 0.5 * (pen * theta * theta).sum() + (cw * torch.nn.functional.softplus(-sign * (x @ theta))).sum()

    theta = torch.zeros(x.shape[1], dtype=z.dtype, device=z.device)
    f = objective(theta)
    for _ in range(max_iter):
        prob = torch.sigmoid(x @ theta)
        grad = pen * theta + x.T @ (cw * (prob - y))
        hess = torch.diag(pen) + (x * (cw * prob * (1 - prob))[:, None]).T @ x
        step = torch.linalg.solve(hess + 1e-12 * torch.eye(x.shape[1], dtype=z.dtype, device=z.device), grad)
        t = 1.0
        while True:
            new = theta - t * step
            f_new = objective(new)
            if f_new <= f or t < 1e-8:
                break
            t *= 0.5
        theta, f_old, f = new, f, f_new
        if float(grad.abs().max()) < tol or abs(float(f_old - f)) <= tol * max(1.0, abs(float(f))):
            break
    if not bool(torch.isfinite(theta).all()):  # e.g. separable validation data with a huge logistic_c
        raise OODLensError(f"logistic fusion did not converge (non-finite weights with logistic_c={c:g}); "
                           "lower logistic_c (stronger regularisation)")
    return theta[:-1].clone(), theta[-1].clone()


def member_pvalues(scores: torch.Tensor, cal_sorted: torch.Tensor, method: str = "marginal",
                   delta: float = 0.1) -> torch.Tensor:
    """Conformal p-values (N, K) of member scores (N, K) against sorted calibration scores (K, n): marginal, or
    one of :mod:`oodlens.calibrate`'s calibration-conditional variants ('simes', 'dkw', with ``delta``)."""
    n = cal_sorted.shape[1]
    counts = count_at_least(cal_sorted.to(scores.device), scores.T.contiguous())
    return pvalue_table(n, method, delta, device=scores.device)[counts].T


def pvalue_statistic(p: torch.Tensor, method: str) -> torch.Tensor:
    """A classic statistic (N,) of member p-values (N, K), higher = more OOD (see ``P_STATISTICS``)."""
    if method == "fisher":
        return -2.0 * torch.log(p).sum(1)
    if method == "min_p":
        return -torch.log(p.amin(1))
    raise OODLensError(f"unknown p-value statistic {method!r}; use one of {', '.join(P_STATISTICS)}")


def apply_rule(scores: torch.Tensor, method: str, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Fused score (N,) of member scores (N, K) under a fitted rule; higher = more OOD."""
    if method in P_RULES:
        return -log_combined_pvalue(member_pvalues(scores, state["cal_sorted"]), method)
    z = (scores - state["mean"].to(scores.device)) / state["std"].to(scores.device)
    if method == "zscore":
        return z.mean(1)
    if method == "zscore_max":
        return z.amax(1)
    if "coef" not in state:
        raise NotFittedError("the logistic fusion rule is not fitted: it needs validation OOD data")
    return z @ state["coef"].to(scores.device) + state["intercept"].to(scores.device)


class ScoreFusion:
    """A fusion rule on precomputed scores (e.g. from several detectors or modalities).

    >>> fuse = ScoreFusion("fisher").fit({"energy": e_val, "knn": k_val})       # ID validation scores
    >>> fused = fuse.score({"energy": e_test, "knn": k_test})                   # (N,), higher = more OOD
    >>> ScoreFusion("logistic").fit(id_val_scores, ood_scores=ood_val_scores)   # validation data only
    """

    def __init__(self, method: str = "fisher", logistic_c: float = 1.0):
        self.method = check_rule(method)
        self.logistic_c = check_logistic_c(logistic_c)
        self.state_: dict[str, torch.Tensor] | None = None
        self.names_: list[str] | None = None

    def fit(self, id_scores: Any, ood_scores: Any = None, split: str = "validation") -> "ScoreFusion":
        s, names = stack_scores(id_scores, "ID calibration scores")
        o = None
        if ood_scores is not None:
            o, ood_names = stack_scores(ood_scores, "validation OOD scores")
            if isinstance(ood_scores, Mapping) and isinstance(id_scores, Mapping) and ood_names != names:
                raise OODLensError(f"validation OOD members {ood_names} differ from ID members {names}")
        self.state_ = fit_rule(s, self.method, o, split, self.logistic_c, names)
        self.names_ = names
        return self

    def _stack(self, scores: Any) -> torch.Tensor:
        if self.state_ is None:
            raise NotFittedError("ScoreFusion is not fitted; call fit(id_calibration_scores) first")
        s, names = stack_scores(scores)
        if s.shape[1] != len(self.names_):
            raise OODLensError(f"expected {len(self.names_)} member scores ({self.names_}), got {s.shape[1]}")
        if isinstance(scores, Mapping) and names != self.names_:
            raise OODLensError(f"member names {names} differ from the fitted ones {self.names_}")
        return s

    def score(self, scores: Any) -> torch.Tensor:
        """Fused score per input, higher = more OOD."""
        return apply_rule(self._stack(scores), self.method, self.state_)

    def pvalues(self, scores: Any) -> torch.Tensor:
        """Each member's marginal conformal p-values (N, K)."""
        return member_pvalues(self._stack(scores), self.state_["cal_sorted"])
