"""NNGuide: −logsumexp(f(x)) · mean of the k largest ẑ·(ẑ_j·conf_j) over a confidence-scaled training bank;
plus the chunked top-k search it uses (oodlens.detectors._neighbours)."""

import math

import pytest
import torch

from oodlens.detectors._blocks import row_slices, rows_within
from oodlens.detectors._neighbours import block_shape, topk_inner
from oodlens.detectors.nnguide import NNGuide
from oodlens.errors import OODLensError


def _problem(seed=0, n=80, d=6, c=3, n_test=25):
    g = torch.Generator().manual_seed(seed)
    train = {"features": torch.randn(n, d, generator=g, dtype=torch.float64),
             "logits": 2 * torch.randn(n, c, generator=g, dtype=torch.float64)}
    test = {"features": torch.randn(n_test, d, generator=g, dtype=torch.float64),
            "logits": 2 * torch.randn(n_test, c, generator=g, dtype=torch.float64)}
    return train, test


def _unit(v):
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def _lse(v):
    m = max(v)
    return m + math.log(sum(math.exp(a - m) for a in v))


def _naive(train, test, k, rows=None):
    z, lg = train["features"].tolist(), train["logits"].tolist()
    rows = range(len(z)) if rows is None else rows
    bank = [[a * _lse(lg[j]) for a in _unit(z[j])] for j in rows]
    out = []
    for zi, li in zip(test["features"].tolist(), test["logits"].tolist()):
        u = _unit(zi)
        sims = sorted((sum(a * b for a, b in zip(u, bj)) for bj in bank), reverse=True)
        out.append(-_lse(li) * sum(sims[:k]) / k)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("k", [1, 10])
def test_full_bank_matches_naive_formula(k):
    train, test = _problem()
    s = NNGuide(k=k, bank_ratio=1.0).fit(train).score(test)
    assert torch.allclose(s.double(), _naive(train, test, k), rtol=1e-5, atol=1e-5)


def test_subsampled_bank_is_a_seeded_subset():
    train, test = _problem(n=200)
    det = NNGuide(k=5, bank_ratio=0.1, seed=3).fit(train)
    assert det.bank_.shape == (20, 6)
    again = NNGuide(k=5, bank_ratio=0.1, seed=3).fit(train)
    assert torch.equal(det.bank_, again.bank_)
    other = NNGuide(k=5, bank_ratio=0.1, seed=4).fit(train)
    assert not torch.equal(det.bank_, other.bank_)
    # the bank rows are training rows: find them and check the score against the naive formula on that subset
    z = torch.nn.functional.normalize(train["features"], dim=1) * torch.logsumexp(train["logits"], 1)[:, None]
    rows = [int((z.float() - b).abs().sum(1).argmin()) for b in det.bank_]
    assert torch.allclose(z[rows].float(), det.bank_, atol=1e-6)
    assert torch.allclose(det.score(test).double(), _naive(train, test, 5, rows), rtol=1e-5, atol=1e-5)


def test_bank_never_smaller_than_k():
    train, _ = _problem(n=50)
    det = NNGuide(k=10, bank_ratio=0.01).fit(train)   # ⌊0.5⌋ = 0 < k: the bank keeps k samples
    assert det.bank_.shape[0] == 10


def test_errors():
    train, test = _problem(n=8)
    with pytest.raises(OODLensError, match="at least 10 training samples"):
        NNGuide(k=10).fit(train)
    with pytest.raises(OODLensError, match="bank_ratio"):
        NNGuide(k=2, bank_ratio=0.0).fit(train)
    with pytest.raises(OODLensError, match="k must be"):
        NNGuide(k=0).fit(train)
    det = NNGuide(k=2, bank_ratio=0.5).fit(train)
    det.set_params(k=7)
    with pytest.raises(OODLensError, match="bank holds 4"):
        det.score(test)


def test_float16_inputs():
    train, test = _problem()
    det = NNGuide(k=5, bank_ratio=1.0).fit({k: v.half() for k, v in train.items()})
    s = det.score({k: v.half() for k, v in test.items()})
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
    ref = _naive({k: v.half().double() for k, v in train.items()}, {k: v.half().double() for k, v in test.items()}, 5)
    assert torch.allclose(s.double(), ref, rtol=1e-4, atol=1e-4)


# -- the chunked search ---------------------------------------------------------------------------------------------
def test_topk_inner_is_exact_for_any_block_size():
    g = torch.Generator().manual_seed(0)
    q, b = torch.randn(37, 4, generator=g), torch.randn(53, 4, generator=g)
    want = (q @ b.T).topk(6, dim=1).values
    for budget in (1, 7, 64, 500, 1 << 20):
        assert torch.allclose(topk_inner(q, b, 6, budget=budget), want, atol=1e-6)


def test_block_shape_respects_budget():
    for n, m, budget, extra in [(10_000, 1_000_000, 1 << 20, 10), (5, 3, 1 << 23, 0), (10**6, 10**6, 1 << 23, 100)]:
        rows, cols = block_shape(n, m, budget, extra)
        assert 1 <= rows <= n and 1 <= cols <= m
        assert rows * (cols + extra) <= max(budget, cols + extra)
    assert [(s.start, s.stop) for s in row_slices(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    assert [(s.start, s.stop) for s in row_slices(2, 0)] == [(0, 1), (1, 2)]  # fewer than 1 row counts as 1
    assert list(row_slices(0, 5)) == []
    assert rows_within(10, 7, 30) == 4 and rows_within(3, 7, 1000) == 3 and rows_within(10, 7, 5) == 1
    assert rows_within(0, 7, 30) == 1
