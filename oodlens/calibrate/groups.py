"""Group-conditional (Mondrian) conformal p-values: each test input is calibrated against the ID calibration
scores of its own acquisition group (site, scanner, protocol, modality).

Vovk, Gammerman & Shafer, *Algorithmic Learning in a Random World* (2005), Mondrian conformal prediction; for
outlier testing, Bates et al. (Ann. Statist. 2023). With ``n_g`` calibration scores ``s_i`` of group ``g``:

    p(x) = (1 + #{i : g_i = g, s_i ≥ s(x)}) / (n_g + 1)                      (marginal within the group)

Guarantee: for an ID input of group ``g`` exchangeable with group ``g``'s calibration inputs,
``P(p(x) ≤ t | group = g) ≤ t`` — a false-alarm rate ≤ α *at every site*, not only on average over sites (the
pooled p-value ``(1 + #{i : s_i ≥ s}) / (n + 1)`` can give 2 % at one site and 30 % at another). Simes / DKW
(calibration-conditional) p-values within the group are available through ``method`` as in
:mod:`oodlens.calibrate.pvalues`.

Small groups: a group with ``n_g`` scores cannot give p below ``1 / (n_g + 1)``, and its realised false-alarm rate
varies a lot between calibration draws. Given the calibration set, the false-alarm rate of the flag ``p ≤ α`` is
``1 − F(S_(k))`` with ``k = ⌈(n_g + 1)(1 − α)⌉``, which is Beta(n_g + 1 − k, k)-distributed for continuous scores;
:meth:`GroupCalibrator.group_table` reports its (1 − δ) quantile — the **calibration-conditional bound** on the
group's false-alarm rate — for every group. Groups below ``min_size`` are handled by ``small``:
``"pool"`` (default: calibrated on all groups pooled, with a warning; the per-group guarantee is lost for them),
``"keep"`` (calibrated within the group anyway, with a warning naming the bound) or ``"error"``.

Unseen groups (a test group with no calibration data) are handled by ``unseen``: ``"pool"`` (default; the result
names them in ``unseen`` and marks each such row ``calibrated_in = "pooled"``) or ``"error"``.

Counting within groups is vectorised: scores are replaced by their rank among all scores, and
``key = group · R + rank`` turns "same group and score ≥ s" into one interval of sorted integer keys.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .._checks import as_scores, check_delta
from ..errors import OODLensError
from .pvalues import PVALUE_METHODS, describe_degree, pvalue_table

POOLED = "pooled"
SMALL_POLICIES = ("pool", "keep", "error")
UNSEEN_POLICIES = ("pool", "error")


def group_names(groups: Any, n: int, what: str = "groups") -> list[str]:
    """Group labels as strings (one per row); accepts a sequence of str/int or a 1-D integer tensor/array."""
    if isinstance(groups, str):
        groups = [groups] * n
    if hasattr(groups, "tolist"):
        groups = groups.tolist()
    if not isinstance(groups, Sequence):
        raise OODLensError(f"{what} must be a sequence of labels (one per row), got {type(groups).__name__}")
    names = [str(g) for g in groups]
    if len(names) != n:
        raise OODLensError(f"{what} has {len(names)} labels for {n} scores")
    if POOLED in names:
        raise OODLensError(f"{what}: {POOLED!r} is reserved (it marks rows calibrated on all groups pooled)")
    return names


def counts_within(cal_scores: torch.Tensor, cal_codes: torch.Tensor, scores: torch.Tensor,
                  codes: torch.Tensor) -> torch.Tensor:
    """``#{i : code_i = code, s_i ≥ s}`` per test score, by rank keys (see the module docstring)."""
    n = cal_scores.shape[0]
    _, rank = torch.unique(torch.cat([cal_scores, scores]), return_inverse=True)
    r = int(rank.max()) + 2 if rank.numel() else 2
    keys = (cal_codes * r + rank[:n]).sort().values
    start = torch.searchsorted(keys, codes * r + rank[n:], side="left")
    end = torch.searchsorted(keys, (codes + 1) * r, side="left")
    return end - start


def conditional_far_bound(n: int, alpha: float, delta: float) -> float:
    """(1 − δ) quantile over calibration draws of the false-alarm rate of ``p ≤ α`` (marginal p-values from
    ``n`` scores): Beta(n + 1 − k, k) with ``k = ⌈(n + 1)(1 − α)⌉``; 0 if ``k > n`` (nothing can be flagged)."""
    from scipy.stats import beta

    alpha, delta = check_delta(alpha, "alpha"), check_delta(delta)
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    if k > n:
        return 0.0
    return float(beta.ppf(1.0 - delta, n + 1 - k, k))


@dataclass
class GroupPValues:
    """p-values of one batch with where each was calibrated."""

    pvalues: torch.Tensor  # (N,) float64
    calibrated_in: list[str]  # group name, or "pooled"
    n_used: torch.Tensor  # (N,) calibration scores behind each p-value
    below: torch.Tensor  # (N,) #{used calibration scores < s}
    groups: list[str]  # the input's own group
    unseen: tuple[str, ...]  # test groups without calibration data
    small: tuple[str, ...]  # calibration groups below min_size that were pooled or kept

    @property
    def degree(self) -> torch.Tensor:
        return 1.0 - self.pvalues

    def describe(self) -> list[str]:
        """One line per input: the degree and the calibration quantile in words, naming the group."""
        out = []
        for i, line in enumerate(_describe_rows(self.below, self.n_used, self.degree)):
            own, used = self.groups[i], self.calibrated_in[i]
            where = f"group {used!r}" if used != POOLED else \
                f"all groups pooled ({'unseen group' if own in self.unseen else 'small group'} {own!r})"
            out.append(line.replace("in-distribution calibration samples",
                                    f"in-distribution calibration samples of {where}"))
        return out


def _describe_rows(below: torch.Tensor, n_used: torch.Tensor, degree: torch.Tensor) -> list[str]:
    return [describe_degree([int(b)], int(n), [float(d)])[0] for b, n, d in
            zip(below.tolist(), n_used.tolist(), degree.tolist())]


class GroupCalibrator:
    """Mondrian conformal p-values, one calibration set per group, with explicit small and unseen groups.

    >>> cal = GroupCalibrator(det.score(x_cal), groups=site_of_cal, min_size=40)
    >>> res = cal.pvalues(det.score(x), groups=site_of_x)        # res.pvalues, res.calibrated_in, res.unseen
    >>> cal.group_table(alpha=0.05)                              # n, smallest p, FAR bound per group
    """

    def __init__(self, cal_scores: Any, groups: Any, method: str = "marginal", delta: float = 0.1,
                 min_size: int = 40, small: str = "pool", unseen: str = "pool"):
        cal = as_scores(cal_scores, "calibration scores").to(torch.float64)
        if cal.numel() == 0:
            raise OODLensError("the calibration set is empty (n = 0)")
        if method not in PVALUE_METHODS:
            raise OODLensError(f"unknown p-value method {method!r}; use one of {', '.join(PVALUE_METHODS)}")
        if small not in SMALL_POLICIES:
            raise OODLensError(f"small must be one of {SMALL_POLICIES}, got {small!r}")
        if unseen not in UNSEEN_POLICIES:
            raise OODLensError(f"unseen must be one of {UNSEEN_POLICIES}, got {unseen!r}")
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
            raise OODLensError(f"min_size must be a positive integer, got {min_size!r}")
        names = group_names(groups, int(cal.numel()), "calibration groups")
        self.names = sorted(set(names))
        self.index = {g: i for i, g in enumerate(self.names)}
        self.codes = torch.tensor([self.index[g] for g in names], dtype=torch.long)
        self.scores = cal
        self.sizes = {g: int(c) for g, c in zip(self.names, torch.bincount(self.codes, minlength=len(self.names)))}
        self.method, self.delta, self.min_size, self.small_policy, self.unseen_policy = \
            method, check_delta(delta), min_size, small, unseen
        self.small = tuple(g for g in self.names if self.sizes[g] < min_size)
        if self.small:
            listing = ", ".join(f"{g!r} (n={self.sizes[g]})" for g in self.small)
            if small == "error":
                raise OODLensError(f"calibration groups below min_size={min_size}: {listing}")
            what = "calibrated on all groups pooled (no per-group guarantee for them)" if small == "pool" else \
                "calibrated within the group: coarse p-values and a wide false-alarm bound (see group_table)"
            warnings.warn(f"small calibration groups {listing} are {what}", stacklevel=2)
        self.n = int(cal.numel())

    def _table(self, n: int) -> torch.Tensor:
        return pvalue_table(n, self.method, self.delta)

    def pvalues(self, scores: Any, groups: Any) -> GroupPValues:
        """p-values of ``scores`` (N,) given each input's group (N labels, or one label for the whole batch)."""
        s = as_scores(scores, "scores").to(torch.float64).reshape(-1)
        names = group_names(groups, int(s.numel()), "test groups")
        unseen = tuple(sorted({g for g in names if g not in self.index}))
        if unseen and self.unseen_policy == "error":
            raise OODLensError(f"test groups {list(unseen)} have no calibration data (known: {self.names})")
        pooled_groups = set(unseen) | (set(self.small) if self.small_policy == "pool" else set())
        use_pool = torch.tensor([g in pooled_groups for g in names], dtype=torch.bool)
        codes = torch.tensor([self.index.get(g, -1) for g in names], dtype=torch.long)
        own = counts_within(self.scores, self.codes, s, codes.clamp_min(0))
        pooled = counts_within(self.scores, torch.zeros_like(self.codes), s, torch.zeros_like(codes))
        sizes = torch.tensor([self.sizes[g] for g in self.names], dtype=torch.long)
        n_used = torch.where(use_pool, torch.full_like(codes, self.n), sizes[codes.clamp_min(0)])
        m = torch.where(use_pool, pooled, own)
        # one lookup table per group and one for the pool, concatenated; each row reads its slot's table
        sizes_all = [self.sizes[g] for g in self.names] + [self.n]
        starts = torch.tensor([0] + [n + 1 for n in sizes_all[:-1]], dtype=torch.long).cumsum(0)
        flat = torch.cat([self._table(n) for n in sizes_all])
        off = starts[torch.where(use_pool, torch.full_like(codes, len(self.names)), codes)]
        p = flat[off + m]
        calibrated_in = [POOLED if u else g for g, u in zip(names, use_pool.tolist())]
        small = tuple(g for g in self.small if g in set(names))
        return GroupPValues(p, calibrated_in, n_used, n_used - m, names, unseen, small)

    def group_table(self, alpha: float = 0.05, delta: float = 0.1) -> "pd.DataFrame":  # noqa: F821
        """Per calibration group: ``n``, the smallest reachable p-value, whether ``p ≤ alpha`` is reachable, and
        the (1 − δ) calibration-conditional bound on the false-alarm rate of ``p ≤ alpha`` (marginal p)."""
        import pandas as pd

        alpha, delta = check_delta(alpha, "alpha"), check_delta(delta)
        rows = []
        for g in self.names + [POOLED]:
            n = self.n if g == POOLED else self.sizes[g]
            p_min = float(self._table(n)[0])
            rows.append({"group": g, "n": n, "min_p": p_min, "reachable": p_min <= alpha,
                         f"far_bound_{1 - delta:g}": conditional_far_bound(n, alpha, delta),
                         "small": g in self.small})
        return pd.DataFrame(rows)


__all__ = ["POOLED", "GroupCalibrator", "GroupPValues", "conditional_far_bound", "counts_within", "group_names"]
