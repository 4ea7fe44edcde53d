"""Entropy: score = −Σ p log p of the softmax, checked against a loop in float64."""

import math

import torch

from oodlens.detectors import create
from oodlens.features import Features


def _naive(logits: torch.Tensor) -> torch.Tensor:
    out = []
    for row in logits.double().tolist():
        m = max(row)
        e = [math.exp(v - m) for v in row]
        z = sum(e)
        out.append(-sum((q / z) * math.log(q / z) for q in e if q > 0))
    return torch.tensor(out, dtype=torch.float64)


def _det(f: torch.Tensor):
    return create("entropy").fit(Features(logits=f))


def test_matches_naive_formula():
    f = torch.randn(20, 6, generator=torch.Generator().manual_seed(0)) * 2.5
    s = _det(f).score(Features(logits=f))
    assert torch.allclose(s.double(), _naive(f), atol=1e-5, rtol=1e-5)


def test_extremes_uniform_and_confident():
    f = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1e4, 0.0, 0.0, 0.0], [5.0, 5.0, -1e4, -1e4]])
    s = _det(f).score(Features(logits=f))
    assert torch.allclose(s, torch.tensor([math.log(4), 0.0, math.log(2)]), atol=1e-6)


def test_huge_norms_stay_finite():
    f = torch.randn(8, 10, generator=torch.Generator().manual_seed(1)) * 1e6
    s = _det(f).score(Features(logits=f))
    assert torch.isfinite(s).all() and (s >= 0).all()


def test_float16():
    f = torch.randn(8, 5, generator=torch.Generator().manual_seed(2))
    det = _det(f)
    s = det.score(Features(logits=f.half()))
    assert s.dtype == torch.float32
    assert torch.allclose(s.double(), _naive(f.half().float()), atol=1e-5)


def test_many_row_blocks_and_float64(monkeypatch):
    from oodlens.detectors import _logit_only

    f = torch.randn(23, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 4
    f[5] = torch.tensor([300.0, 0, 0, 0, 0, 0, -300.0])  # underflowing probabilities contribute 0
    monkeypatch.setattr(_logit_only, "LOGIT_BLOCK", 20)  # 2 rows per block: 12 blocks, the last one partial
    s = _det(f).score(Features(logits=f))
    assert s.dtype == torch.float64
    assert torch.allclose(s, _naive(f), atol=1e-12, rtol=1e-12)
