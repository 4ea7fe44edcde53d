"""fDBD: mean distance to the decision boundaries of the predicted class over the distance to the training mean."""

import math

import pytest
import torch
from torch import nn

from oodlens.detectors.fdbd import FDBD
from oodlens.errors import OODLensError


def _problem(seed=0, n=50, d=6, c=4):
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(d, c).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(c, d, generator=g, dtype=torch.float64))
        head.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64))
    train = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5
    test = torch.randn(30, d, generator=g, dtype=torch.float64)
    return train, test, head


def _naive(train, test, head, normalizer):
    w, b = head.weight.tolist(), head.bias.tolist()
    c, d = len(w), len(w[0])
    mu = [sum(r[j] for r in train.tolist()) / train.shape[0] for j in range(d)]
    out = []
    for z in test.tolist():
        logits = [sum(w[k][j] * z[j] for j in range(d)) + b[k] for k in range(c)]
        p = max(range(c), key=lambda k: logits[k])
        total = 0.0
        for k in range(c):
            if k == p:
                continue
            diff = [w[p][j] - w[k][j] for j in range(d)]
            num = abs(sum(diff[j] * z[j] for j in range(d)) + b[p] - b[k])
            total += num / math.sqrt(sum(v * v for v in diff))
        ref = [z[j] - mu[j] for j in range(d)] if normalizer == "distance" else z
        out.append(-(total / (c - 1)) / math.sqrt(sum(v * v for v in ref)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("normalizer", ["distance", "norm"])
def test_matches_naive_formula(normalizer):
    train, test, head = _problem()
    det = FDBD(normalizer=normalizer).fit({"features": train}, head=head)
    s = det.score({"features": test})
    assert s.dtype == torch.float64
    assert torch.allclose(s, _naive(train, test, head, normalizer), rtol=1e-10, atol=1e-12)


def test_float32_matches_to_1e5():
    train, test, head = _problem(seed=1)
    det = FDBD().fit({"features": train.float()}, head=head.float())
    s = det.score({"features": test.float()})
    assert torch.allclose(s.double(), _naive(train, test, head, "distance"), rtol=1e-5, atol=1e-5)


def test_huge_norms_and_feature_at_mean_stay_finite():
    train, test, head = _problem()
    det = FDBD().fit({"features": train}, head=head)
    big = det.score({"features": test * 1e6})
    assert torch.isfinite(big).all()
    assert torch.allclose(big, _naive(train, test * 1e6, head, "distance"), rtol=1e-8)
    at_mean = det.score({"features": train.mean(0, keepdim=True)})
    assert torch.isfinite(at_mean).all()


def test_duplicated_head_rows_raise():
    train, _, head = _problem()
    w = head.weight.detach().clone()
    w[2] = w[0]
    with pytest.raises(OODLensError, match="duplicated weight row"):
        FDBD().fit({"features": train}, head=(w, head.bias.detach()))


def test_single_class_head_and_dimension_mismatch_raise():
    train, _, head = _problem()
    with pytest.raises(OODLensError, match="at least 2 classes"):
        FDBD().fit({"features": train}, head=(head.weight[:1].detach(), head.bias[:1].detach()))
    with pytest.raises(OODLensError, match="head expects D=6"):
        FDBD().fit({"features": train[:, :4]}, head=head)


def test_bad_normalizer_and_missing_head_raise():
    train, _, head = _problem()
    with pytest.raises(OODLensError, match="normalizer"):
        FDBD(normalizer="l1").fit({"features": train}, head=head)
    with pytest.raises(OODLensError, match="head"):
        FDBD().fit({"features": train})


def test_float16_inputs():
    train, test, head = _problem()
    det = FDBD().fit({"features": train.half()}, head=head)
    s = det.score({"features": test.half()})
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
    ref = _naive(train.half().double(), test.half().double(), head, "distance")
    assert torch.allclose(s.double(), ref, rtol=1e-4, atol=1e-5)


def test_batched_scoring_equals_one_pass():
    train, test, head = _problem()
    det = FDBD().fit({"features": train}, head=head)
    assert torch.allclose(det.score({"features": test}, batch_size=7), det.score({"features": test}))
