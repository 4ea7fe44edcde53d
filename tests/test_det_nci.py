"""NCI: −( w_ŷ·(z − μ_G)/‖z − μ_G‖ + α‖z‖₁ ), exactly as the reference's pScore + L1 term."""

import math

import pytest
import torch
from torch import nn

from oodlens.detectors.nci import NCI
from oodlens.errors import OODLensError


def _problem(seed=0, n=40, d=5, c=3):
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(d, c).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(c, d, generator=g, dtype=torch.float64))
        head.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64))
    train = torch.randn(n, d, generator=g, dtype=torch.float64).abs()
    test = torch.randn(20, d, generator=g, dtype=torch.float64).abs()
    return train, test, head


def _naive(train, test, head, alpha):
    w, b = head.weight.tolist(), head.bias.tolist()
    c, d = len(w), len(w[0])
    mu = [sum(r[j] for r in train.tolist()) / train.shape[0] for j in range(d)]
    out = []
    for z in test.tolist():
        p = max(range(c), key=lambda k: sum(w[k][j] * z[j] for j in range(d)) + b[k])
        centred = [z[j] - mu[j] for j in range(d)]
        p_score = sum(w[p][j] * centred[j] for j in range(d)) / math.sqrt(sum(v * v for v in centred))
        out.append(-(p_score + alpha * sum(abs(v) for v in z)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("alpha", [0.0, 1e-4, 0.1])
def test_matches_naive_formula(alpha):
    train, test, head = _problem()
    s = NCI(alpha=alpha).fit({"features": train}, head=head).score({"features": test})
    assert torch.allclose(s, _naive(train, test, head, alpha), rtol=1e-10, atol=1e-12)


def test_float32_matches_to_1e5():
    train, test, head = _problem(seed=3)
    s = NCI(alpha=0.01).fit({"features": train.float()}, head=head.float()).score({"features": test.float()})
    assert torch.allclose(s.double(), _naive(train, test, head, 0.01), rtol=1e-5, atol=1e-5)


def test_not_a_cosine_weight_norm_matters():
    """The reference divides by ‖z − μ‖ only: scaling the head's weights scales pScore."""
    train, test, head = _problem()
    s1 = NCI(alpha=0.0).fit({"features": train}, head=head).score({"features": test})
    s2 = NCI(alpha=0.0).fit({"features": train}, head=(3 * head.weight.detach(), 3 * head.bias.detach())).score({"features": test})
    assert torch.allclose(s2, 3 * s1)


def test_alpha_is_score_only():
    train, test, head = _problem()
    det = NCI(alpha=0.0).fit({"features": train}, head=head)
    det.set_params(alpha=0.1)
    assert torch.allclose(det.score({"features": test}), _naive(train, test, head, 0.1))


def test_feature_at_mean_and_huge_norms_are_finite():
    train, test, head = _problem()
    det = NCI().fit({"features": train}, head=head)
    assert torch.isfinite(det.score({"features": train.mean(0, keepdim=True)})).all()
    s = det.score({"features": test * 1e8})
    assert torch.isfinite(s).all()


def test_errors():
    train, _, head = _problem()
    with pytest.raises(OODLensError, match="head"):
        NCI().fit({"features": train})
    with pytest.raises(OODLensError, match="head expects D=5"):
        NCI().fit({"features": train[:, :3]}, head=head)


def test_float16_inputs():
    train, test, head = _problem()
    det = NCI(alpha=0.01).fit({"features": train.half()}, head=head)
    s = det.score({"features": test.half()})
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
    assert torch.allclose(s.double(), _naive(train.half().double(), test.half().double(), head, 0.01), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["nci", "fdbd"])
def test_train_mean_is_float64_and_blockwise(monkeypatch, name):
    """NCI and fDBD centre on the training mean, accumulated in float64 row blocks (``_gaussian.mean64``)."""
    import oodlens.detectors._gaussian as gaussian
    from oodlens.detectors import create

    g = torch.Generator().manual_seed(4)
    z = torch.randn(23, 5, generator=g) * 1e4 + 3e4
    head = (torch.randn(3, 5, generator=g), torch.randn(3, generator=g))
    monkeypatch.setattr(gaussian, "_ROWS", 4)  # 6 blocks, the last one partial
    det = create(name).fit({"features": z}, head=head)
    assert det.train_mean_.dtype == torch.float64
    assert torch.allclose(det.train_mean_, z.double().mean(0), rtol=1e-14, atol=0)
