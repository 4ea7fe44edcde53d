"""VRA against a naive numpy implementation of its piecewise rectification."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from oodlens.detectors import create
from oodlens.errors import OODLensError

from test_det_ash import check_compiled_shaping, cpu_path  # noqa: F401 - cpu_path: fixture (compiled / numpy CPU path)


def _problem(seed=0, n=60, d=9, c=4):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(n, d, generator=g).abs() * torch.linspace(0.5, 3, d)
    test = torch.randn(30, d, generator=g).abs() * 2
    head = (torch.randn(c, d, generator=g), torch.randn(c, generator=g))
    return train, test, head


def _naive_vra(train, test, w, b, qa, qb, gamma):
    lo = np.percentile(train, qa, axis=0)
    hi = np.percentile(train, qb, axis=0)
    out = []
    for z in test:
        h = np.empty_like(z)
        for j, v in enumerate(z):
            if v < lo[j]:
                h[j] = 0.0
            elif v > hi[j]:
                h[j] = hi[j]
            else:
                h[j] = v + gamma
        out.append(-logsumexp(w @ h + b))
    return np.array(out)


@pytest.mark.parametrize("qa,qb,gamma", [(60, 90, 0.0), (60, 95, 0.6), (0, 100, 0.0), (30, 30, 0.2)])
def test_matches_naive(qa, qb, gamma, cpu_path):
    train, test, (w, b) = _problem()
    det = create("vra", alpha_percentile=qa, beta_percentile=qb, gamma=gamma).fit({"features": train}, head=(w, b))
    got = det.score({"features": test}).numpy()
    want = _naive_vra(train.double().numpy(), test.double().numpy(), w.double().numpy(), b.double().numpy(),
                      qa, qb, gamma)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_edge_cases(cpu_path):
    train, test, head = _problem(1)
    s = create("vra").fit({"features": train}, head=head).score({"features": test})
    s16 = create("vra").fit({"features": train.half()}, head=head).score({"features": test.half()})
    assert torch.allclose(s16, s, rtol=2e-2, atol=2e-2)
    assert torch.isfinite(create("vra").fit({"features": train * 1e6}, head=head).score({"features": test * 1e6})).all()
    with pytest.raises(OODLensError, match="alpha_percentile <= beta_percentile"):
        create("vra", alpha_percentile=95, beta_percentile=90).fit({"features": train}, head=head)
    with pytest.raises(OODLensError, match="gamma"):
        create("vra", gamma=float("nan")).fit({"features": train}, head=head)


@pytest.mark.parametrize("gamma", [0.0, 0.6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_clip_equals_numpy_kernel(gamma, dtype):
    """The compiled clip writes the numpy kernel's values exactly, also at the thresholds themselves, for
    negative values and huge magnitudes."""
    train, test, head = _problem(2)
    det = create("vra", gamma=gamma).fit({"features": train.to(dtype)}, head=head)
    lo, hi = det.lower_, det.upper_
    rows = torch.cat([test.to(dtype), -test.to(dtype), test.to(dtype) * 1e30, lo[None], hi[None], (hi + gamma)[None],
                      torch.nextafter(lo, hi)[None], torch.nextafter(hi, lo)[None]])
    check_compiled_shaping(det, rows)
