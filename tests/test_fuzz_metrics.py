"""Property-based tests of the metrics, calibration and fusion entry points (issue 10, item 5): mathematical
properties on generated scores, and a clear OODLensError (never an internal exception) on generated bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fuzz_strategies import FUZZ, outcome, scaled
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from oodlens.calibrate import ConformalCalibrator, benjamini_hochberg, conformal_pvalues, describe_degree, pvalue_table
from oodlens.calibrate.screening import false_discovery_proportion
from oodlens.fusion import ScoreFusion, combine_pvalues
from oodlens.metrics import accuracy, auroc, fpr_at_tpr, ood_metrics

#: scores on a grid of integers (as floats): monotone maps below stay exact, so ties are never created or broken
grid_scores = hnp.arrays(np.float64, st.integers(1, 40), elements=st.integers(-50, 50).map(float))


@scaled(ci=40, long=1000)
@given(a=grid_scores, b=grid_scores)
def test_auroc_range_symmetry_and_monotone_invariance(a, b):
    v = auroc(a, b)
    assert 0.0 <= v <= 1.0
    assert math.isclose(auroc(-a, -b), 1.0 - v, abs_tol=1e-12)  # AUROC(s) + AUROC(−s) = 1
    assert math.isclose(auroc(3 * a + 7, 3 * b + 7), v, abs_tol=1e-12)
    assert math.isclose(auroc(a ** 3 + a, b ** 3 + b), v, abs_tol=1e-12)  # strictly increasing map
    naive = np.mean([(y > x) + 0.5 * (y == x) for x in a for y in b])  # P(ood > id) + ½ P(tie)
    assert math.isclose(v, naive, abs_tol=1e-12)
    m = ood_metrics(a, b)
    assert all(0.0 <= x <= 1.0 for x in m.values())


bad_scores = st.one_of(
    st.just([]), st.just([[1.0, 2.0], [3.0, 4.0]]), st.just("abc"), st.just([1.0, float("nan")]),
    st.just([float("inf"), 0.0]), st.just([1 + 2j, 3j]), st.just([None, 1.0]), st.just({"a": 1}),
)


@pytest.mark.parametrize("fn", [auroc, fpr_at_tpr, ood_metrics])
@scaled(ci=8, long=100)
@given(bad=bad_scores, good=grid_scores)
def test_metrics_bad_scores(fn, bad, good):
    assert outcome(lambda: fn(bad, good))[0] == "error"
    assert outcome(lambda: fn(good, bad))[0] == "error"


@scaled(ci=12, long=200)
@given(level=st.one_of(st.floats(allow_nan=True), st.just("high"), st.just(None)), a=grid_scores, b=grid_scores)
def test_metric_level(level, a, b):
    status, v = outcome(lambda: fpr_at_tpr(a, b, level))
    if status == "ok":
        assert 0.0 < level <= 1.0 and 0.0 <= v <= 1.0


@FUZZ
@given(p=hnp.arrays(np.float64, st.tuples(st.integers(0, 4), st.integers(1, 3)),
                    elements=st.one_of(st.floats(-0.5, 1.5), st.sampled_from([math.nan, math.inf, -math.inf]))))
def test_accuracy_and_fusion_on_any_array(p):
    labels = np.zeros(p.shape[0], dtype=np.int64)
    status, v = outcome(lambda: accuracy(p, labels))
    if status == "ok":
        assert 0.0 <= v <= 1.0 and np.isfinite(p).all()
    status, c = outcome(lambda: combine_pvalues(p))
    if status == "ok":
        # the combination of tiny p-values may underflow float64 to 0 (e.g. Fisher of two 1e-176)
        assert ((p > 0) & (p <= 1)).all() and bool(((c >= 0) & (c <= 1)).all()) and c.shape == (p.shape[0],)


@scaled(ci=20, long=300)
@given(cal=hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(-5, 5)),
       test=hnp.arrays(np.float64, st.integers(0, 10), elements=st.floats(-6, 6)),
       method=st.sampled_from(["marginal", "simes", "dkw", "bogus"]))
def test_conformal_pvalues(cal, test, method):
    status, p = outcome(lambda: conformal_pvalues(cal, test, method))
    if status == "error":
        assert method == "bogus"
        return
    n = cal.shape[0]
    assert p.shape == test.shape and bool(((p >= 1.0 / (n + 1) - 1e-12) & (p <= 1.0)).all())
    if method == "marginal":  # p = (1 + #{cal ≥ s}) / (n + 1)
        want = [(1 + np.sum(cal >= s)) / (n + 1) for s in test]
        np.testing.assert_allclose(p.numpy(), want)


@scaled(ci=20, long=300)
@given(n=st.one_of(st.integers(-2, 20), st.floats(0, 20), st.just("10")),
       k=st.one_of(st.none(), st.integers(-1, 25), st.floats(0, 25)),
       counts=st.lists(st.one_of(st.integers(-3, 25), st.floats(-1, 25)), max_size=4),
       delta=st.floats(allow_nan=True, allow_infinity=True))
def test_calibration_helpers_reject_impossible_arguments(n, k, counts, delta):
    status, table = outcome(lambda: pvalue_table(n, "simes", delta, k))
    if status == "ok":
        assert isinstance(n, int) and n >= 1 and 0 < delta < 1 and bool(((table > 0) & (table <= 1)).all())
    status, lines = outcome(lambda: describe_degree(counts, n))
    if status == "ok":
        assert isinstance(n, int) and all(0 <= c <= n and float(c).is_integer() for c in counts)
        assert len(lines) == len(counts)


@scaled(ci=20, long=300)
@given(p=hnp.arrays(np.float64, st.integers(0, 12), elements=st.one_of(st.floats(-0.2, 1.2), st.just(math.nan))),
       alpha=st.one_of(st.floats(allow_nan=True), st.just("0.1")),
       mask=hnp.arrays(np.float64, st.integers(0, 12), elements=st.sampled_from([0.0, 1.0, 0.5])))
def test_screening(p, alpha, mask):
    status, res = outcome(lambda: benjamini_hochberg(p, alpha))
    if status == "ok":
        assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all() and 0 < alpha < 1
        assert res.rejected.shape == p.shape
    rejected = p > 0.5
    status, fdp = outcome(lambda: false_discovery_proportion(rejected, mask))
    if status == "ok":
        assert mask.shape in (rejected.shape, (1,), ()) and 0.0 <= fdp <= 1.0


@scaled(ci=15, long=200)
@given(c=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just("x")),
       n=st.integers(0, 6), k=st.integers(1, 3), method=st.sampled_from(["fisher", "zscore", "logistic", "bogus"]))
def test_score_fusion(c, n, k, method):
    g = np.random.default_rng(n * 10 + k)
    id_s, ood_s = g.normal(size=(n, k)), g.normal(2, 1, size=(n, k))
    status, fuse = outcome(lambda: ScoreFusion(method, logistic_c=c).fit(id_s, ood_s))
    if status == "ok":
        assert method != "bogus" and n >= 2 and math.isfinite(c) and c > 0
        s = fuse.score(id_s)
        assert s.shape == (n,) and bool(torch.isfinite(s).all())
        assert outcome(lambda: fuse.score(np.zeros((3, k + 1))))[0] == "error"
    assert outcome(lambda: ConformalCalibrator(np.array([]) if n == 0 else id_s[:, 0], method="bogus"))[0] == "error"
