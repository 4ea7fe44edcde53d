"""AbeT head and score against a naive computation of the paper's formulas."""

import math

import pytest
import torch

from oodlens.errors import OODLensError
from oodlens.training.abet import AbeTHead, abet_loss, abet_score


def _naive(head: AbeTHead, phi: torch.Tensor):
    """Row by row: h_i = φ·w_i / ((‖φ‖+δ)(‖w_i‖+δ)); T = σ(BN(v·φ+c)) + ε (BN in eval: running stats)."""
    w = head.weight.detach().double()
    v = head.temperature.weight.detach().double()[0]
    c = float(head.temperature.bias.detach())
    bn = head.bn
    bw, bb = float(bn.weight.detach()), float(bn.bias.detach())
    hs, ts = [], []
    for x in phi.double():
        h = [float(x @ w[i]) / ((float(x.norm()) + 1e-4) * (float(w[i].norm()) + 1e-4)) for i in range(w.shape[0])]
        z = float(x @ v) + c
        z = (z - float(bn.running_mean)) / math.sqrt(float(bn.running_var) + bn.eps) * bw + bb
        hs.append(h)
        ts.append(1 / (1 + math.exp(-z)) + 1e-12)
    return torch.tensor(hs), torch.tensor(ts)


def _head(seed=0, d=6, c=4):
    torch.manual_seed(seed)
    head = AbeTHead(d, c)
    with torch.no_grad():  # non-trivial batch-norm state
        head.bn.running_mean.fill_(0.3)
        head.bn.running_var.fill_(2.0)
        head.bn.weight.fill_(1.5)
        head.bn.bias.fill_(-0.2)
    return head.eval()


def test_parts_and_score_equal_formula():
    head = _head()
    phi = torch.randn(7, 6)
    h, t = head.parts(phi)
    h0, t0 = _naive(head, phi)
    torch.testing.assert_close(h.double(), h0.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t[:, 0].double(), t0.double(), rtol=1e-5, atol=1e-6)
    logits = head(phi)
    torch.testing.assert_close(logits, h / t)
    expect = [-math.log(sum(math.exp(float(h0[n, i]) / float(t0[n])) for i in range(4))) for n in range(7)]
    torch.testing.assert_close(abet_score(logits).double(), torch.tensor(expect, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_feature_map_is_per_pixel():
    head = _head(1)
    fmap = torch.randn(2, 6, 3, 5)
    logits = head(fmap)
    assert logits.shape == (2, 4, 3, 5)
    rows = fmap.permute(0, 2, 3, 1).reshape(-1, 6)
    torch.testing.assert_close(logits.permute(0, 2, 3, 1).reshape(-1, 4), head(rows))
    s = abet_score(logits)
    assert s.shape == (2, 3, 5)
    torch.testing.assert_close(s, -torch.logsumexp(logits, dim=1))


def test_loss_is_cross_entropy_with_ignore():
    logits = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 3, 3))
    target[0, 0, 0] = 255
    keep = target != 255
    lp = torch.log_softmax(logits, 1).permute(0, 2, 3, 1)[keep]
    naive = -lp[torch.arange(lp.shape[0]), target[keep]].mean()
    torch.testing.assert_close(abet_loss(logits, target, ignore_index=255), naive)


def test_training_lowers_loss_and_bad_input():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    head = AbeTHead(5, 4)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    first = None
    for _ in range(60):
        loss = abet_loss(head(x), y)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    with pytest.raises(OODLensError):
        head(torch.randn(3, 4))
    with pytest.raises(OODLensError):
        head(torch.randn(3, 5, 2))
