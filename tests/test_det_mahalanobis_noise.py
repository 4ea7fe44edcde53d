"""Input-noise Mahalanobis against a naive per-sample autograd implementation of its formula, plus edge cases."""

import pytest
import torch
from torch import nn

from oodlens.detectors import Detector, create
from oodlens.errors import OODLensError
from oodlens.testing import make_toy_problem


@pytest.fixture(scope="module")
def toy():
    return make_toy_problem()


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The toy CNN's pooled features, by composing its modules by hand (no hooks)."""
    return model.pool(model.block2(model.block1(x)))


def naive_fit(model, x, y):
    """Class means and pseudo-inverse tied covariance, float64, by loops."""
    with torch.no_grad():
        z = penultimate(model, x.float()).double()
    classes = sorted(set(y.tolist()))
    means = torch.stack([z[y == c].mean(0) for c in classes])
    cov = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64)
    for i in range(z.shape[0]):
        d = z[i] - means[int(y[i])]
        cov += torch.outer(d, d)
    cov /= z.shape[0]
    return means, torch.linalg.pinv(cov, hermitian=True, rtol=1e-10)


def naive_score(model, means, prec, x, noise):
    """Per sample: ĉ = argmin_c M_c(z(x)); x̃ = x − ε·sign(∇ₓ M_ĉ) (0 ↦ +1); score = min_c M_c(z(x̃))."""
    model.eval()

    def dists(z):
        return [float((z - m) @ prec @ (z - m)) for m in means]

    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].float().clone().requires_grad_(True)
        z = penultimate(model, xi)[0].double()
        d = dists(z.detach())
        c = d.index(min(d))
        m = means[c]
        loss = 0.5 * (z - m) @ prec @ (z - m)  # the reference's −log-density term; its scale leaves the sign
        (grad,) = torch.autograd.grad(loss, xi)
        step = torch.tensor([1.0 if float(g) >= 0 else -1.0 for g in grad.view(-1)]).view_as(xi)
        xt = xi.detach() - noise * step
        with torch.no_grad():
            out.append(min(dists(penultimate(model, xt)[0].double())))
    return torch.tensor(out, dtype=torch.float64)


def fitted(toy, **params):
    params.setdefault("layer", "pool")
    return create("mahalanobis_noise", **params).fit(toy.train, toy.train_labels, model=toy.model)


@pytest.fixture(scope="module")
def naive_stats(toy):
    return naive_fit(toy.model, toy.train["inputs"], toy.train_labels)


@pytest.mark.parametrize("noise", [0.0014, 0.01, 0.05])
def test_matches_naive(toy, naive_stats, noise):
    x = torch.cat([toy.test_id["inputs"][:10], toy.test_ood["inputs"][:10]])
    det = fitted(toy, noise=noise, batch_size=8)
    expected = naive_score(toy.model, *naive_stats, x, noise)
    torch.testing.assert_close(det.score({"inputs": x}).double(), expected, rtol=1e-5, atol=1e-5)


def test_noise_lowers_the_distance(toy):
    x = toy.test_id["inputs"][:20]
    with_noise = fitted(toy, noise=0.05).score({"inputs": x})
    without = fitted(toy, noise=0.0).score({"inputs": x})
    assert (with_noise < without).float().mean() > 0.8


def test_zero_noise_is_mahalanobis(toy):
    ours = fitted(toy, noise=0.0).score(toy.test_ood)
    plain = create("mahalanobis").fit(toy.train, toy.train_labels).score(toy.test_ood)
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-4)


def test_default_layer_is_head_input(toy):
    a = fitted(toy, layer=None).score(toy.test_id)
    b = fitted(toy, layer="pool").score(toy.test_id)
    assert torch.equal(a, b)


def test_batch_size_invariant(toy):
    a = fitted(toy, batch_size=5).score(toy.test_ood)
    b = fitted(toy, batch_size=500).score(toy.test_ood)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_singular_covariance_and_single_sample_class(toy):
    # 10 training samples for 16 feature dimensions (rank-deficient covariance); class 3 has one sample
    x = toy.train["inputs"][:10]
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3])
    # the pseudo-inverse path (the default "auto" would shrink the covariance here: N < 2·D)
    det = create("mahalanobis_noise", layer="pool", noise=0.01, covariance="empirical").fit({"inputs": x}, y,
                                                                                           model=toy.model)
    xt = toy.test_ood["inputs"][:8]
    s = det.score({"inputs": xt})
    assert torch.isfinite(s).all()
    expected = naive_score(toy.model, *naive_fit(toy.model, x, y), xt, 0.01)
    torch.testing.assert_close(s.double(), expected, rtol=1e-4, atol=1e-3)


def test_float16_and_inference_tensors(toy, naive_stats):
    x16 = toy.test_ood["inputs"][:10].half()
    det = fitted(toy, noise=0.01)
    with torch.no_grad(), torch.inference_mode():
        s = det.score({"inputs": x16.clone()})
    expected = naive_score(toy.model, *naive_stats, x16.float(), 0.01)
    torch.testing.assert_close(s.double(), expected, rtol=1e-5, atol=1e-5)


def test_model_untouched_and_mode_restored(toy):
    params = list(toy.model.parameters())
    saved = [p.grad for p in params]
    params[0].grad = torch.full_like(params[0], 3.0)
    params[1].grad = None
    toy.model.train()
    try:
        fitted(toy, noise=0.01).score(toy.test_id)
        assert toy.model.training
        assert torch.equal(params[0].grad, torch.full_like(params[0], 3.0)) and params[1].grad is None
        assert all(p.grad is g for p, g in zip(params[2:], saved[2:]))
    finally:
        toy.model.eval()
        for p, g in zip(params, saved):
            p.grad = g


def test_huge_inputs_stay_finite(toy):
    s = fitted(toy).score({"inputs": toy.test_ood["inputs"][:10] * 1e3})
    assert torch.isfinite(s).all() and (s > 0).all()


def test_errors(toy, tmp_path):
    with pytest.raises(OODLensError, match="nope"):
        fitted(toy, layer="nope")
    with pytest.raises(OODLensError, match="labels"):
        create("mahalanobis_noise", layer="pool").fit(toy.train, model=toy.model)
    with pytest.raises(OODLensError, match="noise"):
        fitted(toy, noise=-0.1)
    det = fitted(toy)
    det.save(tmp_path / "m.safetensors")
    loaded = Detector.load(tmp_path / "m.safetensors")
    with pytest.raises(OODLensError, match="attach_model"):
        loaded.score(toy.test_id)
    loaded.attach_model(nn.Sequential(toy.model.block1, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)))
    loaded.layer = None
    with pytest.raises(OODLensError, match="fitted on 16"):
        loaded.score(toy.test_id)
    loaded.attach_model(toy.model)
    loaded.layer = "pool"
    assert torch.equal(loaded.score(toy.test_id), det.score(toy.test_id))


def test_no_linear_head_needs_a_layer(toy):
    body = nn.Sequential(toy.model.block1, toy.model.block2, toy.model.pool)
    with pytest.raises(OODLensError, match="layer="):
        create("mahalanobis_noise").fit(toy.train, toy.train_labels, model=body)
    det = create("mahalanobis_noise", layer="2").fit(toy.train, toy.train_labels, model=body)
    torch.testing.assert_close(det.score(toy.test_id), fitted(toy).score(toy.test_id))
