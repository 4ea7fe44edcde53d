"""SCALE against a naive numpy implementation of its formula, on vectors and on maps."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from oodlens.detectors import create
from oodlens.errors import OODLensError

from test_det_ash import _problem, cpu_path  # noqa: F401 - cpu_path: fixture (compiled / numpy CPU path)


def _naive_scale(test, w, b, p):
    out = []
    for a in test:
        flat = a.ravel()
        n = flat.size
        k = n - int(np.round(n * p / 100.0))
        s2 = sum(sorted(flat, reverse=True)[:k])
        h = a * np.exp(flat.sum() / s2)
        pooled = h if h.ndim == 1 else h.reshape(h.shape[0], -1).mean(1)
        out.append(-logsumexp(w @ pooled + b))
    return np.array(out)


@pytest.mark.parametrize("shape", [(12,), (6, 3, 2)])
@pytest.mark.parametrize("p", [0, 50, 85, 95])
def test_matches_naive(shape, p, cpu_path):
    train, test, (w, b) = _problem(shape=shape)
    det = create("scale", percentile=p).fit({"features": train}, head=(w, b))
    got = det.score({"features": test}).numpy()
    want = _naive_scale(test.double().numpy(), w.double().numpy(), b.double().numpy(), p)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_default_and_edge_cases(cpu_path):
    assert create("scale").percentile == 85
    train, test, head = _problem(2)
    test = test.clone()
    test[0] = 0.0  # all-zero row: no scaling needed, finite
    det = create("scale").fit({"features": train}, head=head)
    s = det.score({"features": test})
    assert torch.isfinite(s).all()
    s16 = create("scale").fit({"features": train.half()}, head=head).score({"features": test.half()})
    assert torch.allclose(s16, s, rtol=2e-2, atol=2e-2)
    # a large sharpening factor (e^{s1/s2} with one dominant-rank entry kept) stays finite
    spiky = torch.full((1, 12), 1.0)
    spiky[0, 0] = 1.5
    assert torch.isfinite(create("scale", percentile=95).fit({"features": train}, head=head)
                          .score({"features": spiky * 1e3})).all()
    with pytest.raises(OODLensError, match="prunes all"):
        create("scale", percentile=100).fit({"features": train}, head=head)
