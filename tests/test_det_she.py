"""SHE: stored pattern = mean of correctly classified training features per class; score = −z·P_ŷ."""

import math

import pytest
import torch

from oodlens.detectors.she import SHE
from oodlens.errors import OODLensError


def _problem(seed=0, n=60, d=5, c=3):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % c
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    logits[torch.arange(n), y] += 1.5            # most, not all, correctly classified
    zt = torch.randn(25, d, generator=g, dtype=torch.float64)
    lt = torch.randn(25, c, generator=g, dtype=torch.float64)
    return {"features": z, "logits": logits}, y, {"features": zt, "logits": lt}


def _naive(train, y, test, metric):
    z, logits = train["features"].tolist(), train["logits"].tolist()
    c = len(logits[0])
    patterns = []
    for k in range(c):
        rows = [z[i] for i in range(len(z)) if int(y[i]) == k and max(range(c), key=lambda j: logits[i][j]) == k]
        patterns.append([sum(r[j] for r in rows) / len(rows) for j in range(len(z[0]))])
    out = []
    for zi, li in zip(test["features"].tolist(), test["logits"].tolist()):
        p = patterns[max(range(c), key=lambda j: li[j])]
        dot = sum(a * b for a, b in zip(zi, p))
        if metric == "inner_product":
            out.append(-dot)
        elif metric == "cosine":
            out.append(-dot / math.sqrt(sum(a * a for a in zi)) / math.sqrt(sum(b * b for b in p)))
        else:
            out.append(math.sqrt(sum((a - b) ** 2 for a, b in zip(zi, p))))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("metric", ["inner_product", "cosine", "euclidean"])
def test_matches_naive_formula(metric):
    train, y, test = _problem()
    s = SHE(metric=metric).fit(train, y).score(test)
    assert torch.allclose(s.double(), _naive(train, y, test, metric), rtol=1e-5, atol=1e-5)


def test_patterns_use_only_correctly_classified_samples():
    train, y, _ = _problem()
    det = SHE().fit(train, y)
    ok = train["logits"].argmax(1) == y
    assert not bool(ok.all())                     # the problem does contain mistakes
    want = torch.stack([train["features"][ok & (y == k)].mean(0) for k in range(3)]).float()
    assert torch.allclose(det.patterns_, want, atol=1e-6)


def test_higher_means_more_ood_along_the_pattern():
    train, y, _ = _problem()
    det = SHE().fit(train, y)
    p = det.patterns_[0].double()
    logits = torch.tensor([[5.0, 0.0, 0.0]] * 2, dtype=torch.float64)
    s = det.score({"features": torch.stack([2 * p, 0.5 * p]), "logits": logits})
    assert s[0] < s[1]                            # larger energy along the stored pattern = more ID


def test_one_correct_sample_in_a_class():
    train, y, test = _problem()
    logits = train["logits"].clone()
    only = (y == 2).nonzero().flatten()
    logits[only, 2] = -10.0                       # every class-2 sample misclassified ...
    logits[only[0], 2] = 10.0                     # ... but one
    train = {"features": train["features"], "logits": logits}
    det = SHE().fit(train, y)
    assert torch.allclose(det.patterns_[2], train["features"][only[0]].float())
    assert torch.allclose(det.score(test).double(), _naive(train, y, test, "inner_product"), rtol=1e-5, atol=1e-5)


def test_class_without_correct_sample_raises():
    train, y, _ = _problem()
    logits = train["logits"].clone()
    logits[y == 1, 1] = -10.0
    with pytest.raises(OODLensError, match=r"classes \[1\]"):
        SHE().fit({"features": train["features"], "logits": logits}, y)


def test_labels_beyond_logits_raise():
    train, y, _ = _problem()
    with pytest.raises(OODLensError, match="logits have only 3 classes"):
        SHE().fit(train, torch.where(y == 2, 5, y))


def test_bad_metric_raises():
    train, y, _ = _problem()
    with pytest.raises(OODLensError, match="metric"):
        SHE(metric="manhattan").fit(train, y)


def test_float16_inputs():
    train, y, test = _problem()
    det = SHE().fit({k: v.half() for k, v in train.items()}, y)
    s = det.score({k: v.half() for k, v in test.items()})
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
    ref = SHE().fit({k: v.float() for k, v in train.items()}, y).score({k: v.float() for k, v in test.items()})
    assert torch.allclose(s, ref, atol=2e-2)
