"""ViM against a naive numpy version of the ViM repository's benchmark (score negated: higher = more OOD)."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from oodlens.detectors import create
from oodlens.errors import OODLensError


def naive_vim(train, w, b, test, dim):
    train, test, w, b = (np.asarray(a, np.float64) for a in (train, test, w, b))
    u = -np.linalg.pinv(w) @ b
    # the reference's general eig; eigh where the moment is singular (eig's basis of a repeated eigenvalue
    # need not be orthonormal there, which only the reference's N >> D use avoids)
    evals, evecs = (np.linalg.eig if len(train) > train.shape[1] else np.linalg.eigh)((train - u).T @ (train - u) / len(train))
    ns = evecs.T[np.argsort(-evals.real)[dim:]].T.real
    alpha = (train @ w.T + b).max(-1).mean() / np.linalg.norm((train - u) @ ns, axis=-1).mean()
    vlogit = np.linalg.norm((test - u) @ ns, axis=-1) * alpha
    energy = logsumexp(test @ w.T + b, axis=-1)
    return -(-vlogit + energy)


def problem(n=80, d=12, c=5, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(d, d, generator=g) * torch.logspace(0, -1, d)
    x = torch.relu(torch.randn(n, d, generator=g) @ basis.T + 1.0)
    t = torch.relu(torch.randn(30, d, generator=g) @ basis.T * 1.5)
    w, b = torch.randn(c, d, generator=g), torch.randn(c, generator=g)
    return (x * scale).double(), (w, b * scale), (t * scale).double()


@pytest.mark.parametrize("dim", [None, 2, 10])
def test_matches_naive(dim):
    x, head, t = problem()
    det = create("vim", dim=dim).fit({"features": x}, head=head)
    want = naive_vim(x, *head, t, dim if dim is not None else 6)
    np.testing.assert_allclose(det.score({"features": t}).numpy(), want, rtol=1e-8, atol=1e-8)


def test_paper_form_is_monotone_in_ours():
    x, head, t = problem()
    s = create("vim").fit({"features": x}, head=head).score({"features": t}).numpy()
    w, b = (a.double().numpy() for a in head)
    # the paper's probability of the virtual logit is sigmoid(score): same ranking
    p = 1 / (1 + np.exp(-s))
    assert (np.argsort(p) == np.argsort(s)).all()


def test_float16_more_dims_than_samples_and_huge_norms():
    x, head, t = problem(n=8, d=20)
    s = create("vim", dim=4).fit({"features": x}, head=head).score({"features": t})
    np.testing.assert_allclose(s.numpy(), naive_vim(x, *head, t, 4), rtol=1e-7, atol=1e-7)
    s16 = create("vim", dim=4).fit({"features": x.half()}, head=head).score({"features": t.half()})
    np.testing.assert_allclose(s16.numpy(), naive_vim(x.half(), *head, t.half(), 4), rtol=1e-4, atol=1e-3)
    xb, hb, tb = problem(scale=1e4)
    sb = create("vim", dim=5).fit({"features": xb.float()}, head=hb).score({"features": tb.float()})
    np.testing.assert_allclose(sb.numpy(), naive_vim(xb, *hb, tb, 5), rtol=1e-4)


def test_zero_residual_raises():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 10, generator=g, dtype=torch.float64)
    head = (torch.randn(4, 10, generator=g), torch.zeros(4))
    with pytest.raises(OODLensError, match="residual"):
        create("vim", dim=5).fit({"features": x}, head=head)
