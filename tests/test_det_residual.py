"""Residual against a naive numpy version of the ViM repository's formula (general eig, argsort, pinv)."""

import numpy as np
import pytest
import torch

from oodlens.detectors import create
from oodlens.detectors._principal import default_principal_dim
from oodlens.errors import OODLensError


def naive_residual(train, w, b, test, dim):
    train, test, w, b = (np.asarray(a, np.float64) for a in (train, test, w, b))
    u = -np.linalg.pinv(w) @ b
    c = train - u
    # the reference's general eig; eigh where the moment is singular (eig's basis of a repeated eigenvalue
    # need not be orthonormal there, which only the reference's N >> D use avoids)
    evals, evecs = (np.linalg.eig if len(train) > train.shape[1] else np.linalg.eigh)(c.T @ c / len(train))
    ns = evecs.T[np.argsort(-evals.real)[dim:]].T.real
    return np.linalg.norm((test - u) @ ns, axis=-1)


def problem(n=80, d=12, c=5, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(d, d, generator=g) * torch.logspace(0, -1, d)
    x = torch.randn(n, d, generator=g) @ basis.T + 1.0
    t = torch.randn(30, d, generator=g) @ basis.T * 1.5
    w, b = torch.randn(c, d, generator=g), torch.randn(c, generator=g)
    return (x * scale).double(), (w, b * scale), (t * scale).double()


@pytest.mark.parametrize("dim", [None, 3, 9])
def test_matches_naive(dim):
    x, head, t = problem()
    s = create("residual", dim=dim).fit({"features": x}, head=head).score({"features": t})
    want = naive_residual(x, *head, t, dim if dim is not None else 6)
    np.testing.assert_allclose(s.numpy(), want, rtol=1e-8, atol=1e-10)


def test_default_dim_rule():
    assert [default_principal_dim(d) for d in (16, 512, 768, 1024, 2048, 4096)] == [8, 256, 512, 512, 1000, 1000]


def test_more_dimensions_than_samples_float16_and_huge_norms():
    x, head, t = problem(n=8, d=20)
    s = create("residual", dim=4).fit({"features": x}, head=head).score({"features": t})
    np.testing.assert_allclose(s.numpy(), naive_residual(x, *head, t, 4), rtol=1e-7, atol=1e-9)
    s16 = create("residual", dim=4).fit({"features": x.half()}, head=head).score({"features": t.half()})
    np.testing.assert_allclose(s16.numpy(), naive_residual(x.half(), *head, t.half(), 4), rtol=1e-4, atol=1e-4)
    xb, hb, tb = problem(scale=1e4)
    sb = create("residual", dim=5).fit({"features": xb.float()}, head=hb).score({"features": tb.float()})
    np.testing.assert_allclose(sb.numpy(), naive_residual(xb, *hb, tb, 5), rtol=1e-4)


def test_bad_dim_and_head():
    x, head, t = problem()
    with pytest.raises(OODLensError, match="dim"):
        create("residual", dim=12).fit({"features": x}, head=head)
    with pytest.raises(OODLensError, match="head"):
        create("residual").fit({"features": x})
    with pytest.raises(OODLensError, match="D=12"):
        create("residual").fit({"features": x}, head=(torch.randn(3, 7), torch.zeros(3)))
