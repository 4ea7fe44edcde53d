"""Box-score enhancements and image-level bootstrap against naive implementations."""

import numpy as np
import pytest
import torch

from oodlens.detection.bootstrap import _by_image, _resample, auroc_fast, bootstrap
from oodlens.detection.enhance import ClassConditionalConformal, SizeNormalised, fused_scores
from oodlens.metrics import auroc


def test_class_conditional_conformal_naive():
    rng = np.random.default_rng(0)
    cal, ccls = rng.normal(size=50).round(1), rng.integers(0, 3, 50)  # class 3 has no calibration boxes
    s, c = rng.normal(size=20).round(1), rng.integers(0, 4, 20)
    got = ClassConditionalConformal().fit(cal, ccls, 4).score(s, c).numpy()
    for x, k, g in zip(s, c, got):
        pool = cal[ccls == k] if (ccls == k).any() else cal
        p = (1 + (pool >= x).sum()) / (pool.size + 1)
        assert g == pytest.approx(-np.log(p))


def test_size_normalised_naive():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 50, (80, 2))
    wh = rng.uniform(2, 30, (80, 2))
    boxes = np.c_[xy, xy + wh]
    s = rng.normal(size=80)
    sn = SizeNormalised(bins=4).fit(s, boxes)
    la = np.log(wh.prod(1))
    edges = np.quantile(la, [0.25, 0.5, 0.75])
    b = np.searchsorted(edges, la)
    want = np.empty(80)
    for k in range(4):
        v = s[b == k]
        q1, q2, q3 = np.quantile(v, [0.25, 0.5, 0.75])
        want[b == k] = (s[b == k] - q2) / (q3 - q1)
    np.testing.assert_allclose(sn.score(s, boxes).numpy(), want)


def test_fused_scores_is_fisher_of_conformal_pvalues():
    rng = np.random.default_rng(2)
    va, vb, ta, tb = rng.normal(size=40), rng.normal(size=40), rng.normal(size=5), rng.normal(size=5)
    got = fused_scores({"a": va, "b": vb}, {"a": ta, "b": tb}).numpy()
    pa = (1 + (va[None] >= ta[:, None]).sum(1)) / 41
    pb = (1 + (vb[None] >= tb[:, None]).sum(1)) / 41
    fisher = -2 * (np.log(pa) + np.log(pb))
    assert np.all(np.diff(got[np.argsort(fisher)]) >= -1e-9)  # same order as Fisher's statistic


def test_bootstrap_resamples_images():
    image = np.array([0, 0, 1, 2, 2, 2])
    order, start, counts = _by_image(image, 3)
    rows = _resample(order, start, counts, np.array([2, 0, 2]))
    assert sorted(rows.tolist()) == sorted([3, 4, 5, 0, 1, 3, 4, 5])
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=60), rng.normal(1, 1, 40)
    out = bootstrap(auroc, {"x": (a, b), "y": (a, b + 0.5)}, np.arange(60) // 3, np.arange(40) // 2, reps=100,
                    baseline="x")
    assert out["x"]["value"].value == pytest.approx(auroc(a, b))
    assert out["x"]["value"].low <= out["x"]["value"].value <= out["x"]["value"].high
    assert out["x"]["diff"].value == 0 and out["y"]["diff"].low > 0  # paired: the shift is a real improvement


def test_auroc_fast_equals_metric_with_ties():
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 6, 70).astype(float), rng.integers(2, 9, 30).astype(float)
    assert auroc_fast(a, b) == pytest.approx(auroc(a, b), abs=1e-12)
