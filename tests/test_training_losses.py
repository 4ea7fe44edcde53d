"""Each training-time loss against a naive, loop-by-loop computation of its formula."""

import math

import numpy as np
import pytest
import torch

from oodlens.training import (energy_margin_loss, logitnorm_loss, soft_cross_entropy, uniform_cross_entropy)
from oodlens.training.moe import cutmix_box, mix_inputs, mixed_targets
from oodlens.training.npos import binary_outlier_loss, kth_distance, synthesize_outliers
from oodlens.training.vos import class_gaussians, vos_uncertainty_loss, weighted_logsumexp


def _lse(row):
    return math.log(sum(math.exp(v) for v in row))


def _ce(row, y):
    return _lse(row) - row[y]


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 4, generator=g, dtype=torch.float64) * 3


def test_logitnorm(logits):
    y = torch.tensor([0, 1, 2, 3, 1])
    tau = 0.04
    naive = 0.0
    for row, t in zip(logits.tolist(), y.tolist()):
        norm = math.sqrt(sum(v * v for v in row)) + 1e-7
        naive += _ce([v / (tau * norm) for v in row], t)
    assert logitnorm_loss(logits, y, tau).item() == pytest.approx(naive / 5, rel=1e-9)


def test_outlier_exposure_is_ce_to_uniform(logits):
    naive = sum(-sum(math.log(math.exp(v) / math.exp(_lse(row))) for v in row) / 4 for row in logits.tolist()) / 5
    assert uniform_cross_entropy(logits).item() == pytest.approx(naive, rel=1e-9)


def test_energy_margin(logits):
    out = logits.flip(0) * 0.3
    m_in, m_out = -4.0, -1.0
    e_in = [-_lse(r) for r in logits.tolist()]
    e_out = [-_lse(r) for r in out.tolist()]
    naive = sum(max(0.0, e - m_in) ** 2 for e in e_in) / 5 + sum(max(0.0, m_out - e) ** 2 for e in e_out) / 5
    assert energy_margin_loss(logits, out, m_in, m_out).item() == pytest.approx(naive, rel=1e-9)
    assert naive > 0


def test_mixture_outlier_exposure_targets_and_mixing(logits):
    y = torch.tensor([0, 1, 2, 3, 1])
    lam = 0.3
    t = mixed_targets(y, 4, lam, torch.float64)
    naive = 0.0
    for row, yy in zip(logits.tolist(), y.tolist()):
        target = [lam * (c == yy) + (1 - lam) / 4 for c in range(4)]
        naive += -sum(tc * (v - _lse(row)) for tc, v in zip(target, row))
    assert soft_cross_entropy(logits, t).item() == pytest.approx(naive / 5, rel=1e-9)
    x, xo = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    rng = np.random.default_rng(0)
    mixed, lam2 = mix_inputs(x, xo, lam, "mixup", rng)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * xo)
    assert lam2 == lam
    mixed, lam3 = mix_inputs(x, xo, 0.5, "cutmix", np.random.default_rng(1))
    y1, y2, x1, x2 = cutmix_box(8, 8, 0.5, np.random.default_rng(1))
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[y1:y2, x1:x2] = True
    assert torch.equal(mixed[..., inside], xo[..., inside]) and torch.equal(mixed[..., ~inside], x[..., ~inside])
    assert lam3 == pytest.approx(1 - inside.sum().item() / 64)


def test_vos_gaussian_weighted_energy_and_uncertainty():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    mu, cov = class_gaussians(q)
    naive_cov = torch.zeros(2, 2, dtype=torch.float64)
    for c in range(3):
        m = sum(q[c, i] for i in range(6)) / 6
        torch.testing.assert_close(mu[c], m)
        for i in range(6):
            naive_cov += torch.outer(q[c, i] - m, q[c, i] - m)
    torch.testing.assert_close(cov, naive_cov / 18 + 1e-4 * torch.eye(2, dtype=torch.float64))
    z = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    naive = [math.log(sum(max(0.0, w[c].item()) * math.exp(z[i, c].item()) for c in range(3))) for i in range(4)]
    torch.testing.assert_close(weighted_logsumexp(z, w), torch.tensor(naive, dtype=torch.float64))
    lin = torch.nn.Linear(1, 2).double()
    a, b = lin.weight[:, 0].detach(), lin.bias.detach()
    phi_in, phi_out = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    naive = 0.0
    for v, lab in [(1.0, 1), (2.0, 1), (-1.0, 0)]:
        row = [a[k].item() * v + b[k].item() for k in range(2)]
        naive += _ce(row, lab)
    assert vos_uncertainty_loss(phi_in, phi_out, lin).item() == pytest.approx(naive / 3, rel=1e-9)


def test_npos_knn_and_synthesis_naive():
    g = torch.Generator().manual_seed(2)
    queue = torch.randn(2, 7, 3, generator=g, dtype=torch.float64).abs()
    d3 = kth_distance(queue, queue, 3)
    for c in range(2):
        for i in range(7):
            qi = queue[c, i] / queue[c, i].norm()
            ds = sorted(float((qi - queue[c, j] / queue[c, j].norm()).norm()) for j in range(7))
            assert d3[c, i].item() == pytest.approx(ds[2], abs=1e-6)
    noise = torch.randn(9, 3, generator=g, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    out = synthesize_outliers(queue, noise, k=3, select=7, pick_nums=7, id_points_num=2, cov_mat=0.1, generator=gen)
    assert out.shape == (2 * 7 * 2, 3)
    # with select = pick_nums = S every queue point is a boundary point: each keeps its 2 farthest candidates
    for c in range(2):
        expected = []
        for i in range(7):
            cands = [queue[c, i] + 0.1 * noise[j] for j in range(9)]
            dk = kth_distance(torch.stack(cands)[None], queue[c:c + 1], 3)[0]
            expected.append({round(float(dk[j]), 9) for j in dk.topk(2).indices.tolist()})
        got = out[c * 14:(c + 1) * 14]
        got_d = kth_distance(got[None], queue[c:c + 1], 3)[0]
        assert sorted(round(float(v), 9) for v in got_d) == sorted(v for s in expected for v in s)
    g_in, g_out = torch.tensor([0.3, -2.0], dtype=torch.float64), torch.tensor([1.5], dtype=torch.float64)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    naive = (-math.log(sig(0.3)) - math.log(sig(-2.0)) - math.log(1 - sig(1.5))) / 3
    assert binary_outlier_loss(g_in, g_out).item() == pytest.approx(naive, rel=1e-9)
