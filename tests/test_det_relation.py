"""Relation: −Σ_j [r > τ] r^t with r = max(0, ẑ·ẑ_j) · (p·p_j) over the training bank, computed in blocks."""

import math

import pytest
import torch

from oodlens.detectors._neighbours import sum_over_bank
from oodlens.detectors.relation import Relation
from oodlens.errors import OODLensError


def _problem(seed=0, n=40, d=5, c=3, n_test=15):
    g = torch.Generator().manual_seed(seed)
    train = {"features": torch.randn(n, d, generator=g, dtype=torch.float64),
             "logits": 3 * torch.randn(n, c, generator=g, dtype=torch.float64)}
    test = {"features": torch.randn(n_test, d, generator=g, dtype=torch.float64),
            "logits": 3 * torch.randn(n_test, c, generator=g, dtype=torch.float64)}
    return train, test


def _unit(v):
    n = math.sqrt(sum(a * a for a in v) + 1e-10)
    return [a / n for a in v]


def _softmax(v):
    e = [math.exp(a - max(v)) for a in v]
    return [a / sum(e) for a in e]


def _naive(train, test, power, thres, hop=1):
    bz = [_unit(v) for v in train["features"].tolist()[::hop]]
    bp = [_softmax(v) for v in train["logits"].tolist()[::hop]]
    out = []
    for zi, li in zip(test["features"].tolist(), test["logits"].tolist()):
        u, p = _unit(zi), _softmax(li)
        total = 0.0
        for zj, pj in zip(bz, bp):
            r = max(0.0, sum(a * b for a, b in zip(u, zj))) * sum(a * b for a, b in zip(p, pj))
            if abs(r) > thres:
                total += r ** power
        out.append(-total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("power,thres", [(1, 0.03), (2, 0.03), (4, 0.0), (1, 0.2)])
def test_matches_naive_formula(power, thres):
    train, test = _problem()
    s = Relation(power=power, threshold=thres).fit(train).score(test)
    assert torch.allclose(s.double(), _naive(train, test, power, thres), rtol=1e-5, atol=1e-5)


def test_hop_subsamples_the_bank():
    train, test = _problem()
    det = Relation(hop=3).fit(train)
    assert det.bank_features_.shape[0] == 14
    assert torch.allclose(det.score(test).double(), _naive(train, test, 1, 0.03, hop=3), rtol=1e-5, atol=1e-5)


def test_power_and_threshold_are_score_only():
    train, test = _problem()
    det = Relation().fit(train)
    det.set_params(power=2, threshold=0.1)
    assert torch.allclose(det.score(test).double(), _naive(train, test, 2, 0.1), rtol=1e-5, atol=1e-5)


def test_sum_over_bank_blocks_agree():
    g = torch.Generator().manual_seed(0)
    q, b = torch.randn(29, 4, generator=g), torch.randn(41, 4, generator=g)
    want = (q @ b.T).clamp_min(0).sum(1)
    for budget in (1, 10, 300, 1 << 20):
        got = sum_over_bank(q, b, lambda r, c: (q[r] @ b[c].T).clamp_min(0), budget=budget)
        assert torch.allclose(got, want, atol=1e-5)


def test_zero_feature_and_huge_norms_are_finite():
    train, test = _problem()
    det = Relation().fit(train)
    z = test["features"].clone()
    z[0] = 0.0
    s = det.score({"features": z * 1e6, "logits": test["logits"]})
    assert torch.isfinite(s).all() and s[0] == 0.0


def test_errors():
    train, _ = _problem()
    with pytest.raises(OODLensError, match="hop"):
        Relation(hop=0).fit(train)
    with pytest.raises(OODLensError, match="power"):
        Relation(power=0).fit(train)
    with pytest.raises(OODLensError, match="threshold"):
        Relation(threshold=-1).fit(train)


def test_float16_inputs():
    train, test = _problem()
    det = Relation().fit({k: v.half() for k, v in train.items()})
    s = det.score({k: v.half() for k, v in test.items()})
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
    ref = Relation().fit({k: v.float() for k, v in train.items()}).score({k: v.float() for k, v in test.items()})
    assert torch.allclose(s, ref, atol=5e-2)
