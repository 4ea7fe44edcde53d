"""MaxLogit: score = −max_c f_c, checked against a loop."""

import torch

from oodlens.detectors import create
from oodlens.features import Features


def _naive(logits: torch.Tensor) -> list[float]:
    return [-max(float(v) for v in row) for row in logits]


def test_matches_naive_formula():
    f = torch.randn(13, 7, generator=torch.Generator().manual_seed(0)) * 3
    det = create("maxlogit").fit(Features(logits=f))
    assert torch.allclose(det.score(Features(logits=f)).double(), torch.tensor(_naive(f), dtype=torch.float64),
                          atol=1e-6)


def test_ignores_training_data_and_shifts_with_logits():
    f = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    a = create("maxlogit").fit(Features(logits=f)).score(Features(logits=f))
    b = create("maxlogit").fit(Features(logits=f * 100)).score(Features(logits=f + 2))
    assert torch.allclose(b, a - 2)


def test_float16_and_huge_logits():
    f = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    det = create("maxlogit").fit(Features(logits=f))
    s16 = det.score(Features(logits=f.half()))
    assert s16.dtype == torch.float32
    assert torch.allclose(s16, det.score(Features(logits=f.half().float())))
    big = det.score(Features(logits=f * 1e30))
    assert torch.isfinite(big).all() and torch.allclose(big, torch.tensor(_naive(f * 1e30)), rtol=1e-6)
