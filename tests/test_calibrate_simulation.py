"""Guarantees by seeded simulation, vectorised over repetitions (each check ≥ 200 repetitions, a second or less):
validity of ID p-values, FDR of BH / Storey-BH, calibration-conditional coverage of Simes / DKW p-values, and the
acceptance guarantees of the threshold rules. Tolerances are 3 Monte-Carlo standard errors."""

import torch

from oodlens.calibrate import count_at_least, pvalue_table
from oodlens.calibrate.simulation import (
    conditional_excess,
    simulate_conditional,
    simulate_fdr,
    simulate_thresholds,
    simulate_validity,
)


def test_id_pvalues_are_valid_at_several_levels():
    r = simulate_validity(n=99, m=40, reps=1000, ts=(0.01, 0.05, 0.1, 0.2, 0.5), seed=1)
    for row in r["rows"]:
        assert row["rate"] <= row["t"] + 3 * row["se"] + 1e-9, row
    marg = {row["t"]: row["rate"] for row in r["rows"] if row["method"] == "marginal"}
    # with n + 1 = 100 the marginal p-value is exactly uniform on the lattice: P(p ≤ t) = t at t = j/100
    for t in (0.05, 0.1, 0.2, 0.5):
        assert abs(marg[t] - t) < 0.01 + 3 * t / 30


def test_bh_and_storey_control_fdr():
    r = simulate_fdr(n=200, m=100, ood_fraction=0.2, shift=2.5, reps=400, alphas=(0.05, 0.1, 0.2), seed=2)
    for row in r["rows"]:
        assert row["fdr"] <= row["alpha"] + 3 * row["se"], row
        assert row["power"] > 0.1
    bh = {row["alpha"]: row for row in r["rows"] if row["method"] == "bh"}
    # BH with PRDS p-values: FDR ≤ α·m0/m (here 0.8 α)
    for alpha, row in bh.items():
        assert row["fdr"] <= row["bound"] + 3 * row["se"]


def test_conditional_variants_hold_their_coverage():
    delta = 0.1
    r = simulate_conditional(n=200, reps=600, delta=delta, seed=3)
    cov = {row["method"]: row for row in r["rows"]}
    for method in ("simes", "dkw"):
        assert cov[method]["coverage"] >= 1 - delta - 3 * (delta * (1 - delta) / 600) ** 0.5, cov[method]
    # marginal p-values are valid on average only: for most calibration draws some level t is exceeded
    assert cov["marginal"]["coverage"] < 0.5


def test_exact_conditional_excess_matches_monte_carlo():
    g = torch.Generator().manual_seed(4)
    n = 30
    cal = torch.rand(4, n, generator=g, dtype=torch.float64).sort(1).values
    for method in ("marginal", "dkw"):
        table = pvalue_table(n, method, 0.2)
        test = torch.rand(4, 200_000, generator=g, dtype=torch.float64)
        p = table[count_at_least(cal, test)]
        mc = torch.stack([(p <= v).double().mean(1) - v for v in table.unique()], 1).amax(1)
        assert torch.allclose(conditional_excess(cal, table).clamp_min(0), mc.clamp_min(0), atol=6e-3)


def test_threshold_rules_keep_their_acceptance():
    acc, delta = 0.95, 0.1
    r = simulate_thresholds(n=1000, reps=600, acceptance=acc, delta=delta, seed=5)
    rows = {row["guarantee"]: row for row in r["rows"]}
    assert rows["marginal"]["mean_acceptance"] >= acc - 3 * rows["marginal"]["se"]
    for g in ("beta", "dkw"):
        assert rows[g]["frac_at_target"] >= 1 - delta - 3 * (delta * (1 - delta) / 600) ** 0.5, rows[g]
    assert rows["marginal"]["k"] <= rows["beta"]["k"] <= rows["dkw"]["k"]
