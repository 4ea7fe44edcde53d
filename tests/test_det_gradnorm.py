"""GradNorm: the closed form (1/T)·Σ_c|C p_c − 1|·Σ_d|h_d| equals, negated, the reference's autograd value
(L1 norm of the last layer's weight gradient of Σ_c −log softmax(f/T)_c, one input at a time)."""

import pytest
import torch
from torch import nn

from oodlens.detectors import create
from oodlens.errors import OODLensError
from oodlens.features import Features


def _autograd_gradnorm(fc: nn.Linear, h: torch.Tensor, temperature: float) -> torch.Tensor:
    out = []
    for i in range(h.shape[0]):
        fc.zero_grad()
        logits = fc(h[i:i + 1]) / temperature
        targets = torch.ones_like(logits)
        loss = torch.mean(torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1))
        loss.backward()
        out.append(fc.weight.grad.abs().sum().item())
    return torch.tensor(out, dtype=torch.float64)


def _problem(seed: int = 0, n: int = 9, d: int = 6, c: int = 4):
    torch.manual_seed(seed)
    fc = nn.Linear(d, c).double()
    h = torch.randn(n, d, dtype=torch.float64).relu() + 0.1 * torch.randn(n, d, dtype=torch.float64)
    with torch.no_grad():
        logits = fc(h)
    return fc, h, logits


@pytest.mark.parametrize("temperature", [1.0, 2.5, 0.5])
def test_matches_autograd_on_a_real_linear_layer(temperature):
    fc, h, logits = _problem()
    feats = Features(features=h.float(), logits=logits.float())
    det = create("gradnorm", temperature=temperature).fit(feats)
    s = det.score(feats).double()
    ref = _autograd_gradnorm(fc, h, temperature)
    assert torch.allclose(-s, ref, rtol=1e-5, atol=1e-6)


def test_default_temperature_and_sign():
    assert create("gradnorm").temperature == 1.0
    _, h, logits = _problem(1)
    feats = Features(features=h.float(), logits=logits.float())
    s = create("gradnorm").fit(feats).score(feats)
    assert (s <= 0).all()  # −GradNorm: a larger gradient norm (more ID) gives a lower score


def test_huge_norms_and_float16():
    _, h, logits = _problem(2)
    big = Features(features=(h * 1e6).float(), logits=(logits * 1e3).float())
    assert torch.isfinite(create("gradnorm").fit(big).score(big)).all()
    half = Features(features=h.half(), logits=logits.half())
    s = create("gradnorm").fit(half).score(half)
    assert s.dtype == torch.float32
    full = Features(features=h.half().float(), logits=logits.half().float())
    assert torch.allclose(s, create("gradnorm").fit(full).score(full))


@pytest.mark.parametrize("t", [0.0, -1.0, float("inf"), True])
def test_bad_temperature(t):
    _, h, logits = _problem(3)
    with pytest.raises(OODLensError, match="temperature"):
        create("gradnorm", temperature=t).fit(Features(features=h.float(), logits=logits.float()))
