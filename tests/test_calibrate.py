"""Conformal p-values, OOD degree, thresholds, BH/Storey and the overlap check against naive implementations."""

import math

import numpy as np
import pytest
import torch

from oodlens.calibrate import (
    ConformalCalibrator,
    acceptance_rate,
    adjust_pvalues,
    benjamini_hochberg,
    check_disjoint,
    conformal_pvalues,
    conformal_threshold,
    ood_degree,
    overlapping_rows,
    row_hashes,
    rows_in_hashes,
    storey_bh,
)
from oodlens.errors import OODLensError


def naive_marginal(cal, s):
    n = len(cal)
    return [(1 + sum(1 for c in cal if c >= x)) / (n + 1) for x in s]


def naive_simes(p, n, delta, k):
    """Reference-code form: idx = max(1, floor((n+1)(1-p))), out = 1 - a_idx, a from the Simes products; except
    h(1) = 1 as in the paper (the code gives 1 - a_1 there, which only differs for k = 1)."""
    def a(i):
        if i < k:
            return 0.0
        prod = 1.0
        for j in range(k):
            prod *= (i - j) / (n - j)
        return delta ** (1 / k) * prod ** (1 / k)
    out = []
    for pi in p:
        if pi == 1.0:
            out.append(1.0)
            continue
        idx = max(1, math.floor((n + 1) * (1 - pi) + 1e-9))
        out.append(1 - a(idx))
    return out


@pytest.fixture
def tied():
    g = torch.Generator().manual_seed(0)
    cal = torch.randint(0, 10, (37,), generator=g).double()  # many ties
    s = torch.cat([torch.randint(-2, 12, (50,), generator=g).double(), cal[:5]])
    return cal, s


def test_marginal_pvalues_match_naive_with_ties(tied):
    cal, s = tied
    p = conformal_pvalues(cal, s)
    assert torch.allclose(p, torch.tensor(naive_marginal(cal.tolist(), s.tolist()), dtype=torch.float64), atol=1e-12)


def test_batched_pvalues_match_rowwise(tied):
    cal, s = tied
    cal2 = torch.stack([cal, cal.flip(0) * 2])
    s2 = torch.stack([s, s * 2])
    p2 = conformal_pvalues(cal2, s2)
    for r in range(2):
        assert torch.equal(p2[r], conformal_pvalues(cal2[r], s2[r]))


@pytest.mark.parametrize("n,delta,k", [(37, 0.1, None), (200, 0.05, None), (50, 0.2, 1), (50, 0.1, 50)])
def test_simes_matches_reference_formula(n, delta, k):
    g = torch.Generator().manual_seed(n)
    cal, s = torch.randn(n, generator=g), torch.randn(300, generator=g) * 1.5
    pm = conformal_pvalues(cal, s)
    ps = conformal_pvalues(cal, s, "simes", delta, k)
    kk = max(1, n // 2) if k is None else k
    assert torch.allclose(ps, torch.tensor(naive_simes(pm.tolist(), n, delta, kk), dtype=torch.float64), atol=1e-12)
    assert bool((ps >= pm - 1e-12).all())  # the conditional correction is conservative
    assert torch.equal(adjust_pvalues(pm, n, "simes", delta, k), ps)


def test_dkw_matches_formula(tied):
    cal, s = tied
    n, delta = len(cal), 0.1
    pm = naive_marginal(cal.tolist(), s.tolist())
    want = [min(1.0, p + math.sqrt(math.log(2 / delta) / (2 * n))) for p in pm]
    assert torch.allclose(conformal_pvalues(cal, s, "dkw", delta), torch.tensor(want, dtype=torch.float64), atol=1e-12)


def test_degree_and_reading():
    cal = torch.arange(500, dtype=torch.float64)
    c = ConformalCalibrator(cal)
    s = torch.tensor([495.5, 1000.0, -1.0, 249.5])
    assert torch.allclose(c.degree(s), 1 - conformal_pvalues(cal, s))
    assert torch.allclose(ood_degree(c.pvalues(s)), c.degree(s))
    lines = c.describe(s)
    # 496 of 500 calibration scores are lower: degree 496/501, fraction 496/500
    assert lines[0] == "OOD degree 0.990: more atypical than 99.2 % of 500 in-distribution calibration samples"
    assert "more atypical than all 500" in lines[1]
    assert "no more atypical than any of 500" in lines[2]
    assert "50.0 %" in lines[3]


def test_float16_and_huge_scores_keep_ties_exact():
    cal = torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=torch.float16)
    s = torch.tensor([2.0, 1e30, -1e30], dtype=torch.float64)
    assert conformal_pvalues(cal, s).tolist() == pytest.approx([4 / 5, 1 / 5, 1.0])


def test_threshold_orders_match_naive():
    g = torch.Generator().manual_seed(3)
    cal = torch.randn(400, generator=g)
    srt = cal.sort().values
    t = conformal_threshold(cal, 0.95)
    assert t.k == math.ceil(401 * 0.95) and t.value == float(srt[t.k - 1])
    # beta: smallest k with P(Bin(n, 1-α) ≥ k) ≤ δ, by direct summation
    n, acc, delta = 400, 0.9, 0.1
    tail = lambda k: sum(math.comb(n, j) * acc ** j * (1 - acc) ** (n - j) for j in range(k, n + 1))
    k_beta = next(k for k in range(1, n + 1) if tail(k) <= delta)
    tb = conformal_threshold(cal, acc, "beta", delta)
    assert tb.k == k_beta and tb.value == float(srt[k_beta - 1])
    td = conformal_threshold(cal, acc, "dkw", delta)
    assert td.k == math.ceil(n * (acc + math.sqrt(math.log(2 / delta) / (2 * n))))
    assert t.k <= td.k and tb.k <= td.k
    assert acceptance_rate(t, cal) == pytest.approx(t.k / 400)
    assert "95 %" in t.statement and "90 %" in tb.statement


def test_flag_is_exactly_p_le_alpha_with_ties(tied):
    cal, s = tied
    for acc in (0.8, 0.9):
        t = conformal_threshold(cal, acc)
        assert torch.equal(t.flag(s), conformal_pvalues(cal, s) <= 1 - acc + 1e-12)


def test_too_small_calibration_is_a_clear_error():
    with pytest.raises(OODLensError, match="too small.*n ≥ 1/α − 1 = 19"):
        conformal_threshold(torch.randn(10), 0.95)
    conformal_threshold(torch.randn(19), 0.95)
    with pytest.raises(OODLensError, match="too small"):
        ConformalCalibrator(torch.randn(10)).check_level(0.05)
    with pytest.raises(OODLensError, match="too small"):
        ConformalCalibrator(torch.randn(40), "simes").check_level(0.05)
    with pytest.raises(OODLensError, match="too small"):
        conformal_threshold(torch.randn(30), 0.95, "beta", 0.1)


@pytest.mark.parametrize("bad,match", [([1.0, float("nan")], "non-finite"), ([], "empty"), ([[1.0, 2.0]], "1-D")])
def test_bad_scores_raise(bad, match):
    with pytest.raises(OODLensError, match=match):
        ConformalCalibrator(torch.tensor(bad))


def test_bad_options_raise():
    with pytest.raises(OODLensError, match="unknown p-value method"):
        conformal_pvalues([1.0, 2.0], [1.0], "bonferroni")
    with pytest.raises(OODLensError, match="delta"):
        conformal_pvalues([1.0, 2.0], [1.0], "dkw", delta=1.5)
    with pytest.raises(OODLensError, match="not marginal conformal p-values"):
        adjust_pvalues([0.3], 10, "simes")
    with pytest.raises(OODLensError, match="guarantee"):
        conformal_threshold(torch.randn(100), 0.9, "exact")


def naive_bh(p, alpha):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    k = 0
    for j in range(1, m + 1):
        if p[order[j - 1]] <= alpha * j / m:
            k = j
    return [i in set(order[:k]) for i in range(m)]


def test_bh_and_storey_match_naive():
    g = torch.Generator().manual_seed(5)
    for trial in range(20):
        m = 1 + trial * 7
        p = torch.cat([torch.rand(m, generator=g), torch.rand(m // 3, generator=g) * 0.01])
        p[: m // 4] = p[0]  # ties
        r = benjamini_hochberg(p, 0.1)
        assert r.rejected.tolist() == naive_bh(p.tolist(), 0.1)
        pi0 = min(1.0, (1 + sum(1 for x in p.tolist() if x > 0.5)) / (len(p) * 0.5))
        rs = storey_bh(p, 0.1)
        assert float(rs.pi0) == pytest.approx(pi0)
        assert rs.rejected.tolist() == naive_bh(p.tolist(), 0.1 / pi0)
    batched = benjamini_hochberg(torch.stack([p, p.flip(0)]), 0.1)
    assert batched.rejected[1].tolist() == naive_bh(p.flip(0).tolist(), 0.1)
    with pytest.raises(OODLensError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.5, 1.5])


def test_overlap_detects_identical_rows_only():
    g = torch.Generator().manual_seed(0)
    fit = torch.randn(2000, 6, generator=g)
    fit[:5] = fit[:5].half().float()
    cal = torch.cat([torch.randn(300, 6, generator=g), fit[[4, 1000]].half(), fit[[7]] + 1e-6])
    ia, ib = overlapping_rows(cal, fit)
    assert ia.tolist() == [300] and ib.tolist() == [4]  # the float16 copy of an exactly-representable row
    cal2 = torch.cat([torch.randn(300, 6, generator=g), fit[[10, 1000]]])
    ia, ib = overlapping_rows(cal2, fit)
    assert ia.tolist() == [300, 301] and ib.tolist() == [10, 1000]
    with pytest.raises(OODLensError, match="2 of 302 rows are identical"):
        check_disjoint(fit, cal2)
    with pytest.raises(OODLensError, match="same object"):
        check_disjoint(fit, fit)
    check_disjoint(fit, torch.randn(100, 6, generator=g))
    assert rows_in_hashes(row_hashes(fit), cal2).tolist() == [300, 301]
    feats_fit, feats_cal = {"a": fit, "b": fit[:, :2]}, {"a": cal2, "b": cal2[:, :2] + 1}
    assert len(overlapping_rows(feats_cal, feats_fit)[0]) == 0  # rows differ in 'b'
    assert row_hashes(torch.tensor([[0.0, 1.0]])).item() == row_hashes(torch.tensor([[-0.0, 1.0]])).item()
