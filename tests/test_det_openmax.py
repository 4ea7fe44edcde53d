"""OpenMax: MAVs of correct training logits, libMR-FitHigh Weibull tails, top-α recalibration, P(unknown).

The naive implementation below follows the reference (OSDN compute_openmax.py / openmax_utils.py) sample by
sample with scipy distances, and fits each Weibull by an independent maximum-likelihood solve (Brent's method on
the shape equation, instead of the detector's bisection on libMR's log-scale parametrisation).
"""

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from scipy.spatial import distance as spd

from oodlens.detectors.openmax import OpenMax, class_tails, fit_weibull_high, weibull_cdf_high
from oodlens.errors import OODLensError

TRANSLATE = 10000.0


def _mle_weibull(x):
    """Maximum-likelihood (scale, shape) of a 2-parameter Weibull, by Brent's method on the shape equation."""
    lx = np.log(x)
    c = lx - lx.max()
    f = lambda k: 1 / k + c.mean() - (np.exp(k * c) * c).sum() / np.exp(k * c).sum()
    hi = 1.0
    while f(hi) > 0:
        hi *= 2
    k = optimize.brentq(f, 1e-12, hi, xtol=1e-14, rtol=1e-15, maxiter=1000)
    return math.exp(lx.max() + math.log(np.mean(np.exp(k * c))) / k), k


class _NaiveMR:
    """libMR FitHigh + w_score, written out."""

    def __init__(self, tail):
        self.small = min(tail)
        self.scale, self.shape = _mle_weibull(np.asarray(tail) + TRANSLATE - self.small)

    def w_score(self, d):
        x = d + TRANSLATE - self.small
        return 0.0 if x < 0 else -math.expm1(-math.exp(self.shape * (math.log(x) - math.log(self.scale))))


def _dist(kind, a, b, eu_weight):
    if kind == "eucos":
        return spd.euclidean(a, b) * eu_weight + spd.cosine(a, b)
    if kind == "euclidean":
        return spd.euclidean(a, b) * eu_weight
    return spd.cosine(a, b)


def _naive(train_logits, labels, test_logits, tail_size, alpha, kind="eucos", eu_weight=1 / 200):
    v, y = train_logits.numpy(), labels.numpy()
    c = v.shape[1]
    mavs, models = [], []
    for k in range(c):
        rows = [v[i] for i in range(len(v)) if y[i] == k and v[i].argmax() == k]
        mav = np.mean(rows, axis=0)
        dists = [_dist(kind, mav, r, eu_weight) for r in rows]
        mavs.append(mav)
        models.append(_NaiveMR(sorted(dists)[-tail_size:]))
    a = min(alpha, c)
    out = []
    for s in test_logits.numpy():
        ranked = s.argsort()[::-1]
        omega = np.zeros(c)
        for i in range(a):
            omega[ranked[i]] = ((a + 1) - (i + 1)) / a
        mod, unk = [], []
        for k in range(c):
            w = models[k].w_score(_dist(kind, mavs[k], s, eu_weight))
            mod.append(s[k] * (1 - w * omega[k]))
            unk.append(s[k] - mod[-1])
        num = math.exp(sum(unk))
        out.append(num / (sum(math.exp(m) for m in mod) + num))
    return torch.tensor(out, dtype=torch.float64)


def _problem(seed=0, n=160, c=4):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    logits = 1.5 * torch.randn(n, c, generator=g, dtype=torch.float64)
    logits[torch.arange(n), y] += 3.0
    logits[(y == 3).nonzero().flatten()[6:], 3] = -5.0      # class 3: only 6 correct samples (< tail_size)
    test = torch.cat([1.5 * torch.randn(20, c, generator=g, dtype=torch.float64) + 4 * torch.eye(c)[torch.arange(20) % c],
                      2.0 * torch.randn(20, c, generator=g, dtype=torch.float64)])
    return logits, y, test


# -- the extreme-value fit ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("translate", [1.0, TRANSLATE])
def test_weibull_fit_matches_independent_mle(translate):
    rng = np.random.default_rng(0)
    rows = [rng.weibull(2.0, size=20) * 3 + 0.5, rng.gamma(2.0, size=20), rng.uniform(0, 0.1, size=20)]
    tails = torch.tensor(np.stack([np.sort(r)[::-1] for r in rows]))
    small, log_scale, inv_shape = fit_weibull_high(tails, torch.ones_like(tails, dtype=torch.bool), translate)
    for i, r in enumerate(rows):
        scale, shape = _mle_weibull(r + translate - r.min())
        assert float(small[i]) == r.min()
        assert math.isclose(math.exp(float(log_scale[i])), scale, rel_tol=1e-9)
        assert math.isclose(1 / float(inv_shape[i]), shape, rel_tol=1e-7)
    # scipy's generic optimiser agrees to its own (looser) tolerance
    r = rows[0] + 1.0 - rows[0].min()
    c, _, scale = stats.weibull_min.fit(r, floc=0)
    small, log_scale, inv_shape = fit_weibull_high(tails[:1], torch.ones(1, 20, dtype=torch.bool), 1.0)
    assert math.isclose(1 / float(inv_shape[0]), c, rel_tol=1e-3) and math.isclose(math.exp(float(log_scale[0])), scale, rel_tol=1e-3)


def test_weibull_fit_with_ragged_tails_equals_row_by_row():
    rng = np.random.default_rng(1)
    lengths = [20, 7, 2]
    tails = torch.zeros(3, 20, dtype=torch.float64)
    mask = torch.zeros(3, 20, dtype=torch.bool)
    for i, m in enumerate(lengths):
        tails[i, :m] = torch.tensor(np.sort(rng.uniform(0, 1, m))[::-1].copy())
        mask[i, :m] = True
    together = fit_weibull_high(tails, mask)
    for i, m in enumerate(lengths):
        alone = fit_weibull_high(tails[i:i + 1, :m], mask[i:i + 1, :m])
        for a, b in zip(together, alone):
            assert torch.allclose(a[i], b[0], rtol=1e-12)


def test_weibull_fit_refuses_degenerate_tails():
    tails = torch.tensor([[1.0, 0.5], [0.3, 0.3], [0.9, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, True], [True, False]])
    with pytest.raises(OODLensError, match=r"class\(es\) \[1, 2\]"):
        fit_weibull_high(tails, mask)


def test_w_score_matches_libmr_formula_and_is_zero_below_shift():
    mr = _NaiveMR([0.3, 0.25, 0.2, 0.1, 0.05])
    small, ls, inv = fit_weibull_high(torch.tensor([[0.3, 0.25, 0.2, 0.1, 0.05]], dtype=torch.float64),
                                      torch.ones(1, 5, dtype=torch.bool))
    d = torch.tensor([[0.0], [0.05], [0.2], [0.3], [0.6]], dtype=torch.float64)
    got = weibull_cdf_high(d, small, ls, inv)[:, 0]
    want = torch.tensor([mr.w_score(float(x)) for x in d[:, 0]], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-9)
    assert float(weibull_cdf_high(torch.tensor([[-2e4]], dtype=torch.float64), small, ls, inv)) == 0.0


def test_class_tails_equal_sorted_per_class():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(50, generator=g, dtype=torch.float64)
    classes = torch.randint(0, 4, (50,), generator=g)
    tails, mask = class_tails(values, classes, 5, 8)
    for k in range(5):
        want = sorted(values[classes == k].tolist(), reverse=True)[:8]
        assert tails[k][mask[k]].tolist() == want


# -- the detector ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha,kind", [(2, "eucos"), (10, "eucos"), (3, "euclidean"), (4, "cosine")])
def test_matches_naive_reference(alpha, kind):
    logits, y, test = _problem()
    det = OpenMax(tail_size=10, alpha=alpha, distance=kind, eu_weight=0.5 if kind == "euclidean" else 1 / 200)
    s = det.fit({"logits": logits}, y).score({"logits": test})
    want = _naive(logits, y, test, 10, alpha, kind, 0.5 if kind == "euclidean" else 1 / 200)
    assert s.dtype == torch.float64
    assert torch.allclose(s, want, rtol=1e-8, atol=1e-12)
    assert bool((s >= 0).all() and (s <= 1).all())


def test_float32_and_float16_inputs():
    logits, y, test = _problem(seed=1)
    want = _naive(logits.float().double(), y, test.float().double(), 20, 10)
    s = OpenMax().fit({"logits": logits.float()}, y).score({"logits": test.float()})
    assert torch.allclose(s, want, rtol=1e-5, atol=1e-9)
    s16 = OpenMax().fit({"logits": logits.half()}, y).score({"logits": test.half()})
    assert torch.isfinite(s16).all()
    assert torch.allclose(s16, _naive(logits.half().double(), y, test.half().double(), 20, 10), rtol=1e-5, atol=1e-9)


def test_too_few_correct_samples_raise():
    logits, y, _ = _problem()
    one = logits.clone()
    one[(y == 2).nonzero().flatten()[1:], 2] = -9.0     # class 2: one correct sample
    with pytest.raises(OODLensError, match=r"OpenMax cannot fit a Weibull for class\(es\) \[2\]"):
        OpenMax().fit({"logits": one}, y)
    none = logits.clone()
    none[y == 1, 1] = -9.0
    with pytest.raises(OODLensError, match=r"classes \[1\] have no correctly classified"):
        OpenMax().fit({"logits": none}, y)


def test_bad_parameters_raise():
    logits, y, _ = _problem()
    for params, word in [({"distance": "manhattan"}, "distance"), ({"tail_size": 1}, "tail_size"),
                         ({"alpha": 0}, "alpha"), ({"eu_weight": 0.0}, "eu_weight")]:
        with pytest.raises(OODLensError, match=word):
            OpenMax(**params).fit({"logits": logits}, y)


def test_w_score_tails_are_exact_without_subnormal_numbers():
    tail = [0.3, 0.25, 0.2, 0.1, 0.05]
    small, ls, inv = fit_weibull_high(torch.tensor([tail], dtype=torch.float64), torch.ones(1, 5, dtype=torch.bool))
    # the fitted shape is ~1e5, so W falls below 1e-300 about 54 below the shift and reaches 1 just above it
    d = torch.cat([torch.linspace(-60, -40, 1001), torch.linspace(-3, 1, 2001)]).to(torch.float64)[:, None]
    got = weibull_cdf_high(d, small, ls, inv)[:, 0].numpy()
    x = d[:, 0].numpy() + TRANSLATE - min(tail)
    with np.errstate(over="ignore", under="ignore"):
        want = -np.expm1(-np.exp((np.log(x) - float(ls)) / float(inv)))
    tiny = want < 1e-300
    assert tiny.any() and (want == 1.0).any() and ((want > 1e-300) & (want < 1)).sum() > 100
    assert (got[tiny] == 0).all()                       # below 1e-300: exactly 0 (never a subnormal number)
    assert (got[~tiny] >= np.finfo(np.float64).tiny).all()
    np.testing.assert_allclose(got[~tiny], want[~tiny], rtol=1e-9, atol=0)


def test_fit_and_score_in_many_row_blocks_match_naive(monkeypatch):
    import oodlens.detectors._gaussian as gaussian
    import oodlens.detectors.openmax as openmax

    monkeypatch.setattr(openmax, "_BLOCK", 12)       # C = 4: 3 rows per block
    monkeypatch.setattr(openmax, "_FIT_BLOCK", 20)   # 5 rows per block
    monkeypatch.setattr(gaussian, "_ROWS", 7)        # masked class sums over 7-row blocks
    logits, y, test = _problem(seed=2)
    s = OpenMax(tail_size=10, alpha=3).fit({"logits": logits.float()}, y).score({"logits": test.float()})
    want = _naive(logits.float().double(), y, test.float().double(), 10, 3)
    assert torch.allclose(s, want, rtol=1e-6, atol=1e-9)
