"""ODIN against a naive per-sample autograd implementation of its formula, plus edge cases."""

import math

import pytest
import torch
from torch import nn

from oodlens.detectors import create
from oodlens.errors import OODLensError
from oodlens.features import Features
from oodlens.testing import make_toy_problem


@pytest.fixture(scope="module")
def toy():
    return make_toy_problem()


def naive_odin(model: nn.Module, x: torch.Tensor, temperature: float, noise: float, std=None) -> torch.Tensor:
    """One sample at a time: − max softmax(f(x − ε·sign(∇ₓ CE(f(x)/T, argmax f(x))) / σ) / T)."""
    model.eval()
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].float().clone().requires_grad_(True)
        logits = model(xi)[0]
        c = max(range(logits.numel()), key=lambda k: float(logits[k].detach()))
        loss = -torch.log_softmax(logits / temperature, dim=0)[c]
        (grad,) = torch.autograd.grad(loss, xi)
        step = torch.empty_like(xi)
        for idx in range(xi.numel()):
            s = 1.0 if float(grad.view(-1)[idx]) >= 0 else -1.0
            ch = idx // (xi.shape[2] * xi.shape[3])
            step.view(-1)[idx] = s / (std[ch] if std is not None else 1.0)
        xt = xi.detach() - noise * step
        with torch.no_grad():
            lt = [float(v) for v in model(xt)[0]]
        top = max(lt)
        out.append(-1.0 / sum(math.exp((v - top) / temperature) for v in lt))
    return torch.tensor(out)


def fitted(toy, **params):
    return create("odin", **params).fit(toy.train, model=toy.model)


@pytest.mark.parametrize("params", [{}, {"temperature": 10.0, "noise": 0.02}, {"temperature": 1.0, "noise": 0.05, "input_std": [0.5]}])
def test_matches_naive(toy, params):
    x = toy.test_ood["inputs"][:25]
    det = fitted(toy, batch_size=8, **params)
    expected = naive_odin(toy.model, x, det.temperature, det.noise, params.get("input_std"))
    torch.testing.assert_close(det.score({"inputs": x}), expected.float(), rtol=1e-5, atol=1e-6)


def test_perturbation_changes_the_score(toy):
    x = toy.test_id["inputs"][:20]
    with_noise = fitted(toy, temperature=1.0, noise=0.05).score({"inputs": x})
    without = fitted(toy, temperature=1.0, noise=0.0).score({"inputs": x})
    assert (without - with_noise).abs().max() > 1e-3  # the step raises confidence → lowers the score
    assert bool((with_noise <= without + 1e-6).float().mean() > 0.8)


def test_no_noise_t1_is_msp(toy):
    odin = fitted(toy, temperature=1.0, noise=0.0).score(toy.test_id)
    msp = create("msp").fit(toy.train).score(toy.test_id)
    torch.testing.assert_close(odin, msp, rtol=1e-5, atol=1e-6)


def test_batch_size_invariant(toy):
    a = fitted(toy, batch_size=7).score(toy.test_id)
    b = fitted(toy, batch_size=1000).score(toy.test_id)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_model_untouched_and_eval_mode(toy):
    model = nn.Sequential(toy.model, nn.Dropout(0.5))
    model.train()
    params = list(model.parameters())
    saved = [p.grad for p in params]
    params[0].grad = torch.ones_like(params[0])
    params[1].grad = None
    try:
        det = create("odin", noise=0.01).fit(toy.train, model=model)
        a, b = det.score(toy.test_id), det.score(toy.test_id)
        assert torch.equal(a, b)  # dropout off while scoring
        assert model.training and toy.model.training  # mode restored
        assert torch.equal(params[0].grad, torch.ones_like(params[0]))
        assert params[1].grad is None
        assert all(p.grad is g for p, g in zip(params[2:], saved[2:]))
    finally:
        for p, g in zip(params, saved):
            p.grad = g
        toy.model.eval()
    expected = naive_odin(toy.model, toy.test_id["inputs"][:10], 1000.0, 0.01)
    torch.testing.assert_close(a[:10], expected.float(), rtol=1e-5, atol=1e-6)


def test_float16_and_inference_tensors(toy):
    x16 = toy.test_id["inputs"][:16].half()
    det = fitted(toy, noise=0.01)
    expected = naive_odin(toy.model, x16.float(), 1000.0, 0.01)
    with torch.inference_mode():
        x_inf = x16.clone()
        s = det.score({"inputs": x_inf})
    torch.testing.assert_close(s, expected.float(), rtol=1e-5, atol=1e-6)


def test_huge_inputs_stay_finite(toy):
    s = fitted(toy).score({"inputs": toy.test_ood["inputs"][:10] * 1e4})
    assert torch.isfinite(s).all() and (s < 0).all()


def test_dict_output_model(toy):
    class DictModel(nn.Module):
        def __init__(self, inner, key):
            super().__init__()
            self.inner, self.key = inner, key

        def forward(self, x):
            return {self.key: self.inner(x)}

    x = toy.test_id["inputs"][:10]
    s = create("odin").fit(toy.train, model=DictModel(toy.model, "logits")).score({"inputs": x})
    torch.testing.assert_close(s, fitted(toy).score({"inputs": x}))
    bad = create("odin").fit(toy.train, model=DictModel(toy.model, "out"))
    with pytest.raises(OODLensError, match="logits"):
        bad.score({"inputs": x})


@pytest.mark.parametrize("params, fragment", [({"temperature": 0.0}, "temperature"), ({"noise": -1.0}, "noise"),
                                              ({"batch_size": 0}, "batch_size"), ({"input_std": [0.0]}, "input_std")])
def test_bad_params(toy, params, fragment):
    with pytest.raises(OODLensError, match=fragment):
        fitted(toy, **params)


def test_input_std_channel_mismatch(toy):
    det = fitted(toy, input_std=[0.2, 0.2, 0.2])
    with pytest.raises(OODLensError, match="input_std"):
        det.score(toy.test_id)


def test_needs_model_and_attach_after_load(toy, tmp_path):
    with pytest.raises(OODLensError, match="model"):
        create("odin").fit(toy.train)
    det = fitted(toy)
    det.save(tmp_path / "odin.safetensors")
    loaded = create("odin").load(tmp_path / "odin.safetensors")
    with pytest.raises(OODLensError, match="attach_model"):
        loaded.score(toy.test_id)
    loaded.attach_model(toy.model)
    assert torch.equal(loaded.score(toy.test_id), det.score(toy.test_id))


def test_features_only_inputs_needed(toy):
    det = fitted(toy)
    assert det.required_features() == ("inputs",)
    s = det.score(Features({"inputs": toy.test_id["inputs"]}))
    assert s.shape == (toy.test_id.n,)
