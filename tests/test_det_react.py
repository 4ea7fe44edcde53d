"""ReAct against a naive numpy implementation of its formula, plus edge cases."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from oodlens.detectors import create
from oodlens.detectors._order_stats import percentile
from oodlens.errors import OODLensError

from test_det_ash import check_compiled_shaping, cpu_path  # noqa: F401 - cpu_path: fixture (compiled / numpy CPU path)


def _problem(seed=0, n=60, d=12, c=5):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(n, d, generator=g).abs() * 2
    test = torch.randn(25, d, generator=g).abs() * 3
    head = (torch.randn(c, d, generator=g), torch.randn(c, generator=g))
    return train, test, head


def _naive_react(train, test, w, b, p):
    thr = np.percentile(train.ravel(), p)
    out = []
    for z in test:
        h = np.array([min(v, thr) for v in z])
        out.append(-logsumexp(w @ h + b))
    return np.array(out)


@pytest.mark.parametrize("p", [90, 50, 99.5, 0, 100])
def test_matches_naive(p, cpu_path):
    train, test, (w, b) = _problem()
    det = create("react", percentile=p).fit({"features": train}, head=(w, b))
    got = det.score({"features": test}).numpy()
    want = _naive_react(train.double().numpy(), test.double().numpy(), w.double().numpy(), b.double().numpy(), p)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("q", [0, 3.3, 50, 90, 97.5, 100])
def test_percentile_equals_numpy(q):
    x = torch.randn(37, 11, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(percentile(x, q).numpy(), np.percentile(x.double().numpy(), q), rtol=1e-12)
    np.testing.assert_allclose(percentile(x, q, dim=0).numpy(), np.percentile(x.double().numpy(), q, axis=0),
                               rtol=1e-12)


def test_float16_and_huge_norms(cpu_path):
    train, test, head = _problem(1)
    det = create("react").fit({"features": train}, head=head)
    s32 = det.score({"features": test})
    s16 = create("react").fit({"features": train.half()}, head=head).score({"features": test.half()})
    assert s16.dtype == torch.float32 and torch.allclose(s16, s32, rtol=1e-2, atol=1e-2)
    big = create("react").fit({"features": train * 1e6}, head=head).score({"features": test * 1e6})
    assert torch.isfinite(big).all()


def test_errors():
    train, test, head = _problem()
    with pytest.raises(OODLensError, match="percentile"):
        create("react", percentile=101).fit({"features": train}, head=head)
    with pytest.raises(OODLensError, match="head"):
        create("react").fit({"features": train})
    with pytest.raises(OODLensError, match="channels"):
        create("react").fit({"features": train[:, :5]}, head=head)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_clip_equals_numpy_kernel(dtype):
    """The compiled min(z, c) equals the numpy kernel and the torch path exactly, at c itself too."""
    train, test, head = _problem(2)
    det = create("react").fit({"features": train.to(dtype)}, head=head)
    c = torch.tensor(det.threshold_, dtype=dtype)
    rows = torch.cat([test.to(dtype), -test.to(dtype) * 1e30, torch.full((1, 12), det.threshold_, dtype=dtype),
                      torch.nextafter(c, c + 1).expand(1, 12)])
    check_compiled_shaping(det, rows)
