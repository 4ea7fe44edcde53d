"""Weighted conformal p-values against the formula (naive loop), the cross-fitted domain weights, and validity
under a known covariate shift by simulation (realised false-alarm rate ≤ α + 2 standard errors)."""

import numpy as np
import pytest
import torch

from oodlens.calibrate import DomainWeights, WeightedCalibrator, effective_sample_size, weighted_pvalues
from oodlens.calibrate.shift_simulation import simulate_shift_validity
from oodlens.errors import NotFittedError, OODLensError


def test_weighted_pvalues_match_the_formula_with_ties():
    gen = torch.Generator().manual_seed(0)
    cal = torch.randint(0, 6, (40,), generator=gen).double()
    w_cal = torch.rand(40, generator=gen, dtype=torch.float64) * 3
    s = torch.randint(0, 7, (25,), generator=gen).double()
    w = torch.rand(25, generator=gen, dtype=torch.float64) * 3
    got = weighted_pvalues(cal, w_cal, s, w)
    want = [(sum(wi for ci, wi in zip(cal.tolist(), w_cal.tolist()) if ci >= sj) + wj) / (float(w_cal.sum()) + wj)
            for sj, wj in zip(s.tolist(), w.tolist())]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64))
    # unit weights give the marginal conformal p-value
    marg = weighted_pvalues(cal, torch.ones(40), s, torch.ones(25))
    assert torch.allclose(marg, (1 + (cal[None] >= s[:, None]).sum(1).double()) / 41)
    # batched: one calibration set per row
    b = weighted_pvalues(torch.stack([cal, cal]), torch.stack([w_cal, w_cal]), torch.stack([s, s]), torch.stack([w, w]))
    assert torch.allclose(b[1], got)


def test_effective_sample_size():
    assert effective_sample_size(torch.ones(10)) == pytest.approx(10)
    assert effective_sample_size(torch.tensor([1.0, 0, 0, 0])) == pytest.approx(1)
    w = torch.tensor([1.0, 2.0, 3.0])
    assert effective_sample_size(w) == pytest.approx(36 / 14)


def test_domain_weights_are_cross_fitted_clipped_and_estimate_the_ratio():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(400, 2))
    xt = rng.normal(size=(400, 2)) + np.array([1.0, 0.0])
    dw = DomainWeights(folds=4, clip=0.05, seed=0).fit(xs, xt)
    w = dw.source_weights_.numpy()
    assert w.shape == (400,) and w.min() >= 0.05 / 0.95 - 1e-12 and w.max() <= 0.95 / 0.05 + 1e-12
    true = np.exp(xs[:, 0] - 0.5)
    assert np.corrcoef(np.log(w), np.log(true))[0, 1] > 0.95
    assert 0.2 * 400 < dw.ess_ < 0.9 * 400 and 0.6 < dw.domain_auroc_ < 0.85
    # cross-fitting: a row's weight does not come from a classifier that saw it
    k_of = DomainWeights(folds=4, clip=0.05, seed=0)._fold_ids(400, np.random.default_rng(0))
    z = (xs - dw.mean_) / dw.std_
    own = 1 / (1 + np.exp(-(z[0] @ dw.coef_[int(k_of[0])] + dw.intercept_[int(k_of[0])])))
    assert w[0] == pytest.approx(np.clip(own, 0.05, 0.95) / (1 - np.clip(own, 0.05, 0.95)))
    assert dw.weights(xs[:5]).shape == (5,)
    again = DomainWeights.from_state(dw.state())
    assert torch.equal(again.weights(xs[:5]), dw.weights(xs[:5])) and again.ess_ == dw.ess_


def test_weighted_calibrator_and_errors():
    rng = np.random.default_rng(1)
    xs, xt = rng.normal(size=(100, 3)), rng.normal(size=(80, 3)) + 0.5
    wc = WeightedCalibrator(torch.from_numpy(xs[:, 0]), xs, xt, site="site C", folds=3)
    p = wc.pvalues(torch.tensor([10.0, -10.0]), xt[:2])
    w = wc.domain.weights(xt[:2])
    assert float(p[0]) == pytest.approx(float(w[0] / (wc.cal_weights.sum() + w[0])))
    assert float(p[1]) == pytest.approx(1.0)
    assert "site C" in wc.describe(torch.tensor([10.0]), xt[:1])[0]
    with pytest.raises(OODLensError, match="width"):
        DomainWeights().fit(xs, xt[:, :2])
    with pytest.raises(OODLensError, match="folds"):
        DomainWeights(folds=1)
    with pytest.raises(NotFittedError):
        DomainWeights().weights(xs)
    with pytest.raises(OODLensError, match="non-negative"):
        weighted_pvalues(torch.zeros(3), torch.tensor([1.0, -1.0, 1.0]), torch.zeros(1), torch.ones(1))
    with pytest.raises(OODLensError, match="non-finite|NaN"):
        DomainWeights(folds=2).fit(np.full((4, 2), np.nan), xt)


def test_weighted_pvalues_stay_valid_under_a_known_shift():
    """Known shift μ = 1 (marginal p over-flags ID inputs of the new site several-fold); the oracle-weighted and the
    estimated-weight p-values keep the realised false-alarm rate ≤ α + 2 SE over many repetitions."""
    r = simulate_shift_validity(shifts=(1.0,), n=200, n_target=200, m=100, reps=120, alpha=0.05, folds=3, seed=4)
    by = {row["method"]: row for row in r["rows"]}
    assert by["marginal"]["far"] > 0.15  # the unweighted degree floods site C with alarms
    for method in ("weighted_oracle", "weighted"):
        assert by[method]["far"] <= 0.05 + 2 * by[method]["se"], by[method]
        assert by[method]["detection"] > 0.5, by[method]  # semantic OOD is still flagged


def test_all_zero_weights_are_refused_not_nan():
    with pytest.raises(OODLensError, match="sum to 0"):  # was: a NaN p-value
        weighted_pvalues(torch.arange(5.0), torch.zeros(5), torch.tensor([1.0]), torch.zeros(1))
    # zero calibration weights with a positive test weight are defined: p = w / w = 1
    assert weighted_pvalues(torch.arange(5.0), torch.zeros(5), torch.tensor([1.0]), torch.ones(1)).item() == 1.0


def test_a_separable_site_warns_that_nothing_can_be_flagged():
    g = torch.Generator().manual_seed(0)
    cal_x, cal_s = torch.randn(200, 5, generator=g), torch.randn(200, generator=g)
    far_site = torch.randn(80, 5, generator=g) + 100.0  # perfectly separable: every weight saturates at the clip
    with pytest.warns(UserWarning, match="cannot fall below"):
        wc = WeightedCalibrator(cal_s, cal_x, far_site)
    # the warning is true: even a score far above every calibration score is not flagged at 0.05
    p = wc.pvalues(torch.tensor([1e6]), far_site[:1])
    assert p.item() > 0.05 and wc.domain.min_pvalue_ > 0.05
    w = float(torch.median(wc.domain.target_weights_))
    assert wc.domain.min_pvalue_ == pytest.approx(w / (float(wc.cal_weights.sum()) + w))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overlapping site stays silent
        near = WeightedCalibrator(cal_s, cal_x, torch.randn(80, 5, generator=g) + 0.3)
    assert near.domain.min_pvalue_ < 0.05


def test_simulation_settings_are_checked():
    from oodlens.calibrate.shift_simulation import simulate_group_validity

    for kw, msg in ((dict(reps=0), "reps"), (dict(n=0), "n must"), (dict(alpha=2.0), "alpha"),
                    (dict(shifts=()), "shifts is empty"), (dict(shifts=(float("nan"),)), "finite")):
        with pytest.raises(OODLensError, match=msg):  # were NaN rows with a torch warning, an IndexError, or FAR 1.0
            simulate_shift_validity(**{"reps": 2, **kw})
    with pytest.raises(OODLensError, match="alpha"):
        simulate_group_validity(alpha=0.0, reps=2)
