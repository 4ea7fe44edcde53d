"""GEN: score = Σ over the top-M softmax probabilities of p^γ (1 − p)^γ (the negated reference confidence)."""

import math

import mpmath
import pytest
import torch

import oodlens.detectors._shaping as shaping
from oodlens.detectors import create
from oodlens.detectors._argmax import row_argmax
from oodlens.errors import OODLensError
from oodlens.features import Features


def _naive(logits: torch.Tensor, gamma: float, m: int) -> torch.Tensor:
    """The reference recipe: sort the softmax, keep the M largest, sum p^γ (1−p)^γ (float64 loops)."""
    out = []
    for row in logits.double().tolist():
        mx = max(row)
        e = [math.exp(v - mx) for v in row]
        z = sum(e)
        probs = sorted((q / z for q in e), reverse=True)[:m]
        out.append(sum(p ** gamma * (1 - p) ** gamma for p in probs))
    return torch.tensor(out, dtype=torch.float64)


def _score(f: torch.Tensor, **params) -> torch.Tensor:
    return create("gen", **params).fit(Features(logits=f)).score(Features(logits=f))


@pytest.fixture(params=["compiled argmax", "torch argmax"])
def argmax_path(request, monkeypatch):
    """The row argmax through the compiled kernel (forced on small inputs) or through torch."""
    if request.param == "compiled argmax":
        if shaping.compiled_kernels() is None:
            pytest.skip("numba is not installed")
        monkeypatch.setattr(shaping, "COMPILED_MIN_VALUES", 0)
    else:
        monkeypatch.setattr(shaping, "USE_COMPILED", False)
    return request.param


@pytest.mark.parametrize("gamma,m", [(0.1, 100), (0.1, 3), (0.5, 1), (0.01, 7), (2.0, 4)])
def test_matches_naive_formula(gamma, m, argmax_path):
    f = torch.randn(25, 7, generator=torch.Generator().manual_seed(0)) * 2
    f[3, [1, 4]] = f[3].max() + 1.0  # a tie at the maximum
    assert torch.allclose(_score(f, gamma=gamma, M=m).double(), _naive(f, gamma, m), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cols", [1, 3, 4, 7, 100])
def test_compiled_row_argmax_equals_torch(monkeypatch, dtype, cols):
    """``row_argmax`` through the compiled kernel: torch.argmax's index (the first maximum), also with ties,
    negative rows, ±inf and a maximum in the last column; rows split over 3 threads."""
    if shaping.compiled_kernels() is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(shaping, "COMPILED_MIN_VALUES", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    g = torch.Generator().manual_seed(cols)
    x = torch.randint(-3, 3, (500, cols), generator=g).to(dtype)  # many ties
    x[:100] = torch.randn(100, cols, generator=g, dtype=dtype) - 50.0
    x[100, -1] = 1e9
    x[101, 0] = -torch.inf
    x[102] = torch.inf
    x[103, cols // 2] = torch.inf
    assert torch.equal(row_argmax(x), x.argmax(1))


def test_defaults_follow_the_paper():
    det = create("gen")
    assert det.gamma == 0.1 and det.M == 100
    # M is capped at C: M=100 on 7 classes equals M=7
    f = torch.randn(10, 7, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(_score(f), _score(f, M=7))


def test_confident_prediction_keeps_its_tiny_term():
    # 1 − p_max ≈ 2e-26 is below float precision; the exact top term is (p_max (1 − p_max))^γ ≈ 3.3e-3
    a, gamma = 60.0, 0.1
    f = torch.tensor([[0.0, -a, -a]])
    with mpmath.workdps(60):
        e = mpmath.exp(-a)
        z = 1 + 2 * e
        probs = [1 / z, e / z, e / z]
        exact = float(sum((p * (1 - p)) ** gamma for p in probs))
    assert exact > 3e-3
    assert torch.allclose(_score(f, gamma=gamma).double(), torch.tensor([exact], dtype=torch.float64), rtol=1e-5)


def test_huge_norms_and_float16():
    f = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(_score(f * 1e6)).all()
    det = create("gen").fit(Features(logits=f))
    s = det.score(Features(logits=f.half()))
    assert s.dtype == torch.float32
    assert torch.allclose(s.double(), _naive(f.half().float(), 0.1, 100), atol=1e-5)


@pytest.mark.parametrize("params", [{"gamma": 0.0}, {"gamma": -1}, {"M": 0}, {"M": 2.5}, {"M": "10"}])
def test_bad_hyper_parameters(params):
    f = torch.randn(4, 3)
    with pytest.raises(OODLensError):
        create("gen", **params).fit(Features(logits=f))
