"""Mondrian (group-conditional) p-values against a naive per-group count, small/unseen groups, and per-group
validity by simulation."""

import warnings

import pytest
import torch

from oodlens.calibrate import GroupCalibrator, conditional_far_bound
from oodlens.calibrate.groups import POOLED, counts_within
from oodlens.calibrate.shift_simulation import simulate_group_validity
from oodlens.errors import OODLensError


def _naive(cal, groups, s, g):
    cal_g = [c for c, gg in zip(cal, groups) if gg == g]
    return (1 + sum(c >= s for c in cal_g)) / (len(cal_g) + 1)


def test_pvalues_match_naive_per_group_count_with_ties():
    gen = torch.Generator().manual_seed(0)
    cal = torch.randint(0, 8, (90,), generator=gen).double()  # many ties
    groups = ["A"] * 50 + ["B"] * 40
    test = torch.randint(0, 9, (30,), generator=gen).double()
    tg = ["A", "B"] * 15
    res = GroupCalibrator(cal, groups, min_size=10).pvalues(test, tg)
    want = [_naive(cal.tolist(), groups, s, g) for s, g in zip(test.tolist(), tg)]
    assert torch.allclose(res.pvalues, torch.tensor(want, dtype=torch.float64))
    assert res.calibrated_in == tg and res.unseen == ()
    assert res.n_used.tolist() == [50, 40] * 15


def test_counts_within_equals_loop():
    gen = torch.Generator().manual_seed(1)
    cal, codes = torch.randn(200, generator=gen), torch.randint(0, 5, (200,), generator=gen)
    s, sc = torch.randn(60, generator=gen), torch.randint(0, 5, (60,), generator=gen)
    got = counts_within(cal, codes, s, sc)
    want = [int(((codes == c) & (cal >= v)).sum()) for v, c in zip(s.tolist(), sc.tolist())]
    assert got.tolist() == want


def test_unseen_group_is_pooled_and_named():
    cal = torch.arange(100).double()
    cal_groups = ["A"] * 60 + ["B"] * 40
    res = GroupCalibrator(cal, cal_groups, min_size=10).pvalues(torch.tensor([50.0, 99.5]), ["C", "A"])
    assert res.unseen == ("C",)
    assert res.calibrated_in == [POOLED, "A"]
    assert float(res.pvalues[0]) == pytest.approx((1 + 50) / 101)  # pooled: 50..99 are ≥ 50
    assert float(res.pvalues[1]) == pytest.approx(1 / 61)
    assert "unseen group 'C'" in res.describe()[0] and "group 'A'" in res.describe()[1]
    with pytest.raises(OODLensError, match="no calibration data"):
        GroupCalibrator(cal, cal_groups, min_size=10, unseen="error").pvalues(torch.tensor([1.0]), ["C"])


def test_small_group_policies():
    cal = torch.arange(70).double()
    groups = ["big"] * 60 + ["tiny"] * 10
    with pytest.warns(UserWarning, match="tiny"):
        pooled = GroupCalibrator(cal, groups, min_size=40)
    res = pooled.pvalues(torch.tensor([65.0]), ["tiny"])
    assert res.calibrated_in == [POOLED] and res.small == ("tiny",)
    assert float(res.pvalues[0]) == pytest.approx(6 / 71)
    with pytest.warns(UserWarning):
        kept = GroupCalibrator(cal, groups, min_size=40, small="keep")
    assert float(kept.pvalues(torch.tensor([65.0]), ["tiny"]).pvalues[0]) == pytest.approx(6 / 11)  # 65..69 of 60..69
    with pytest.raises(OODLensError, match="min_size"):
        GroupCalibrator(cal, groups, min_size=40, small="error")
    table = kept.group_table(alpha=0.05)
    tiny = table[table.group == "tiny"].iloc[0]
    assert not tiny.reachable and tiny.min_p == pytest.approx(1 / 11)


def test_conditional_far_bound_is_the_beta_quantile():
    # n = 99, α = 0.05: k = 95, FAR | cal ~ Beta(5, 95); check by simulation of uniform order statistics
    b = conditional_far_bound(99, 0.05, 0.1)
    u = torch.rand(20000, 99, generator=torch.Generator().manual_seed(2), dtype=torch.float64).sort(1).values
    far = 1 - u[:, 94]
    assert float((far <= b).double().mean()) == pytest.approx(0.9, abs=0.01)


def test_bad_inputs():
    with pytest.raises(OODLensError, match="labels for"):
        GroupCalibrator(torch.zeros(5), ["A"] * 4)
    with pytest.raises(OODLensError, match="reserved"):
        GroupCalibrator(torch.zeros(2), ["pooled", "A"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = GroupCalibrator(torch.zeros(3), ["A"] * 3)
    with pytest.raises(OODLensError, match="non-finite|NaN"):
        cal.pvalues(torch.tensor([float("nan")]), ["A"])


def test_mondrian_keeps_each_group_valid_where_pooling_does_not():
    r = simulate_group_validity(n_per_group=100, m=100, shift=1.0, reps=400, alpha=0.05, seed=3)
    by = {(row["method"], row["group"]): row for row in r["rows"]}
    for g in ("A", "B"):
        row = by[("mondrian", g)]
        assert row["far"] <= 0.05 + 2 * row["se"], row
    assert by[("pooled", "B")]["far"] > 0.05 + 5 * by[("pooled", "B")]["se"]  # pooling over-flags the shifted group


def test_calibration_conditional_methods_use_each_groups_own_table():
    from oodlens.calibrate import conformal_pvalues

    gen = torch.Generator().manual_seed(5)
    cal, test = torch.randn(130, generator=gen), torch.randn(20, generator=gen)
    groups = ["A"] * 80 + ["B"] * 50
    for method in ("simes", "dkw"):
        res = GroupCalibrator(cal, groups, method=method, min_size=10).pvalues(test, ["A"] * 10 + ["B"] * 10)
        want = torch.cat([conformal_pvalues(cal[:80], test[:10], method), conformal_pvalues(cal[80:], test[10:], method)])
        assert torch.allclose(res.pvalues, want), method


@pytest.mark.parametrize("kw", [{"alpha": 1.5}, {"alpha": float("nan")}, {"alpha": 0.0}, {"delta": 0.0},
                                {"delta": 2.0}])
def test_group_table_refuses_alpha_or_delta_outside_0_1(kw):
    cal = GroupCalibrator(torch.arange(100.0), ["A"] * 50 + ["B"] * 50)
    with pytest.raises(OODLensError, match="alpha|delta"):  # was: NaN bounds, a ValueError, or a bound of 1.0
        cal.group_table(**kw)
    with pytest.raises(OODLensError, match="alpha|delta"):
        conditional_far_bound(50, kw.get("alpha", 0.05), kw.get("delta", 0.1))


def test_constructor_refuses_delta_outside_0_1():
    with pytest.raises(OODLensError, match="delta"):
        GroupCalibrator(torch.arange(100.0), ["A"] * 100, delta=2.0)
