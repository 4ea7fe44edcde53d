"""ASH-P / ASH-B / ASH-S against a naive numpy implementation of the formulas, on vectors and on maps."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from oodlens.detectors import create
from oodlens.errors import OODLensError


def _problem(seed=0, shape=(12,), c=5):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(40, *shape, generator=g).abs()
    test = torch.randn(20, *shape, generator=g).abs() * 2
    head = (torch.randn(c, shape[0], generator=g), torch.randn(c, generator=g))
    return train, test, head


def _naive_ash(test, w, b, variant, p):
    out = []
    for a in test:
        flat = a.ravel()
        n = flat.size
        k = n - int(np.round(n * p / 100.0))
        order = sorted(range(n), key=lambda i: -flat[i])[:k]
        h = np.zeros(n)
        s1 = flat.sum()
        s2 = sum(flat[i] for i in order)
        for i in order:
            h[i] = {"p": flat[i], "b": s1 / k, "s": flat[i] * np.exp(s1 / s2)}[variant]
        h = h.reshape(a.shape)
        pooled = h if h.ndim == 1 else h.reshape(h.shape[0], -1).mean(1)
        out.append(-logsumexp(w @ pooled + b))
    return np.array(out)


@pytest.mark.parametrize("variant", ["p", "b", "s"])
@pytest.mark.parametrize("shape", [(12,), (6, 3, 2)])
@pytest.mark.parametrize("p", [0, 40, 65, 90])
def test_matches_naive(variant, shape, p):
    train, test, (w, b) = _problem(shape=shape)
    det = create(f"ash_{variant}", percentile=p).fit({"features": train}, head=(w, b))
    got = det.score({"features": test}).numpy()
    want = _naive_ash(test.double().numpy(), w.double().numpy(), b.double().numpy(), variant, p)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_defaults_follow_the_paper():
    assert create("ash_p").percentile == 60 and create("ash_b").percentile == 65 and create("ash_s").percentile == 90


def test_zero_row_float16_and_huge_norms():
    train, test, head = _problem(1)
    test = test.clone()
    test[0] = 0.0
    for v in "pbs":
        det = create(f"ash_{v}").fit({"features": train}, head=head)
        s = det.score({"features": test})
        assert torch.isfinite(s).all()
        s16 = create(f"ash_{v}").fit({"features": train.half()}, head=head).score({"features": test.half()})
        assert torch.allclose(s16, s, rtol=2e-2, atol=2e-2)
        assert torch.isfinite(det.score({"features": test * 1e6})).all()


def test_errors():
    train, test, head = _problem()
    with pytest.raises(OODLensError, match="prunes all"):
        create("ash_s", percentile=99.9).fit({"features": train}, head=head)
    with pytest.raises(OODLensError, match="percentile"):
        create("ash_p", percentile=-1).fit({"features": train}, head=head)
    det = create("ash_s", percentile=95).fit({"features": train}, head=head)  # keeps k = 1 of 12
    row = -torch.ones(1, 12)
    row[0, 0] = 1.0  # kept sum 1, row sum -10: defined
    assert torch.isfinite(det.score({"features": row})).all()
    row[0, 0] = 0.0  # kept sum 0, row sum -11: s1/s2 undefined
    with pytest.raises(OODLensError, match="s1/s2"):
        det.score({"features": row})


@pytest.mark.parametrize("method,kwargs", [("ash_p", {}), ("ash_b", {}), ("ash_s", {"percentile": 70}),
                                           ("scale", {"percentile": 50}), ("vra", {}), ("vra", {"gamma": 0.6}),
                                           ("react", {}), ("dice", {})])
@pytest.mark.parametrize("data", ["continuous", "ties", "maps"])
def test_cpu_block_kernels_match_torch_path(monkeypatch, method, kwargs, data):
    """The CPU scorer (numpy kernels on row blocks, several blocks here) gives the torch ``_shape`` path's scores,
    also with many ties at the k-th value (ASH keeps the entries torch.topk keeps) and on spatial maps."""
    import oodlens.detectors._shaping as shaping

    monkeypatch.setattr(shaping, "BLOCK_ELEMENTS", 100)
    monkeypatch.setattr(shaping, "HEAD_BLOCK_ELEMENTS", 300)
    g = torch.Generator().manual_seed(3)
    spatial = data == "maps" and method.startswith(("ash", "scale"))
    shape = (6, 2, 2) if spatial else (12,)
    train = torch.randn(50, *shape, generator=g).abs()
    test = torch.randn(40, *shape, generator=g).abs()
    if data == "ties":
        test = torch.randint(0, 3, test.shape, generator=g).float()
    head = (torch.randn(5, shape[0], generator=g), torch.randn(5, generator=g))
    det = create(method, **kwargs).fit({"features": train}, head=head)
    h, factor = det._shape(test)
    want = shaping.head_energy(shaping.pool_spatial(h), det.head_, factor)
    torch.testing.assert_close(det.score({"features": test}), want, rtol=1e-6, atol=1e-5)
