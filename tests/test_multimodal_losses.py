"""A2D and the outlier terms against naive per-sample implementations of MultiOOD's formulas."""

import math
from itertools import combinations

import pytest
import torch

from oodlens.errors import OODLensError
from oodlens.multimodal.losses import (a2d_loss, distance, drop_ground_truth, hellinger, normalized_entropy,
                                       outlier_discrepancy_loss, outlier_entropy_loss)


def naive_softmax(v):
    m = max(v)
    e = [math.exp(x - m) for x in v]
    s = sum(e)
    return [x / s for x in e]


def naive_dist(p, q, kind):
    """Distance between two lists of probability rows, reduced as the reference's torch losses reduce."""
    n, k = len(p), len(p[0])
    if kind == "hellinger":
        tot = 0.0
        for i in range(n):
            s = 0.0
            for c in range(k):
                a, b = max(p[i][c], 1e-6), max(q[i][c], 1e-6)
                s += (math.sqrt(a) - math.sqrt(b)) ** 2
            tot += math.sqrt(s) / math.sqrt(2)
        return tot / n
    if kind == "l1":
        return sum(abs(p[i][c] - q[i][c]) for i in range(n) for c in range(k)) / (n * k)
    return sum((p[i][c] - q[i][c]) ** 2 for i in range(n) for c in range(k)) / (n * k)


def naive_a2d(logits, labels, kind):
    mods = []
    for l in logits:
        rows = []
        for i in range(l.shape[0]):
            y = int(labels[i])
            row = [float(l[i, c]) for c in range(l.shape[1]) if c != y]
            rows.append(naive_softmax(row))
        mods.append(rows)
    pairs = list(combinations(range(len(mods)), 2))
    return -sum(naive_dist(mods[a], mods[b], kind) for a, b in pairs) / len(pairs)


@pytest.mark.parametrize("kind", ["hellinger", "l1", "l2"])
@pytest.mark.parametrize("m", [2, 3])
def test_a2d_matches_naive(kind, m):
    g = torch.Generator().manual_seed(m)
    logits = [torch.randn(7, 5, generator=g, dtype=torch.float64) * 2 for _ in range(m)]
    labels = torch.randint(0, 5, (7,), generator=g)
    got = float(a2d_loss(logits, labels, kind))
    assert got == pytest.approx(naive_a2d(logits, labels, kind), abs=1e-10)
    assert got < 0  # a negated distance: minimising it enlarges the disagreement


def test_drop_ground_truth_keeps_order():
    logits = torch.arange(12.0).view(3, 4)
    out = drop_ground_truth(logits, torch.tensor([0, 2, 3]))
    assert out.tolist() == [[1, 2, 3], [4, 5, 7], [8, 9, 10]]


@pytest.mark.parametrize("kind", ["hellinger", "l1", "l2"])
def test_outlier_terms_match_naive(kind):
    g = torch.Generator().manual_seed(3)
    logits = [torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    probs = [[naive_softmax([float(x) for x in row]) for row in l] for l in logits]
    pairs = list(combinations(range(3), 2))
    want = -sum(naive_dist(probs[a], probs[b], kind) for a, b in pairs) / len(pairs)
    assert float(outlier_discrepancy_loss(logits, kind)) == pytest.approx(want, abs=1e-10)
    ent = []
    for p in probs:
        per = [-sum(v * math.log(v + 1e-9) for v in row) / math.log(4) for row in p]
        ent.append(sum(per) / len(per))
    assert float(outlier_entropy_loss(logits)) == pytest.approx(-sum(ent) / 3, abs=1e-10)


def test_normalized_entropy_bounds():
    uniform = torch.zeros(2, 8)
    assert torch.allclose(normalized_entropy(uniform), torch.ones(2), atol=1e-6)
    peaked = torch.tensor([[100.0, 0, 0, 0]])
    assert float(normalized_entropy(peaked)) < 1e-6


def test_hellinger_identical_rows_have_finite_gradient():
    l = torch.randn(4, 5, requires_grad=True)
    p = torch.softmax(l, 1)
    d = hellinger(p, p.detach().clone()).mean()
    d.backward()
    assert float(d.detach()) == 0.0
    assert torch.isfinite(l.grad).all()


def test_hellinger_range_and_float16():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    h = hellinger(p, q)
    assert h[0] == pytest.approx(1.0, abs=2e-3) and h[1] == pytest.approx(0.0)
    lo = [torch.randn(5, 6).half() for _ in range(2)]
    y = torch.randint(0, 6, (5,))
    assert torch.isfinite(a2d_loss([l.float() for l in lo], y))


def test_errors():
    with pytest.raises(OODLensError, match="at least 2 modalities"):
        a2d_loss([torch.randn(3, 4)], torch.zeros(3, dtype=torch.long))
    with pytest.raises(OODLensError, match="unknown discrepancy"):
        distance(torch.ones(2, 2) / 2, torch.ones(2, 2) / 2, "wasserstein")
    with pytest.raises(OODLensError, match="shape"):
        distance(torch.ones(2, 2), torch.ones(2, 3))
