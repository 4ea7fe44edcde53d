"""DICE against a naive numpy implementation of its formula."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from oodlens.detectors import create
from oodlens.errors import OODLensError

from test_det_ash import cpu_path  # noqa: F401 - fixture: compiled / numpy CPU path


def _problem(seed=0, n=50, d=10, c=4):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(n, d, generator=g).abs()
    test = torch.randn(20, d, generator=g).abs() * 2
    head = (torch.randn(c, d, generator=g), torch.randn(c, generator=g))
    return train, test, head


def _naive_dice(train, test, w, b, p):
    mean = train.mean(0)
    contrib = [[mean[j] * w[c, j] for j in range(w.shape[1])] for c in range(w.shape[0])]
    thresh = np.percentile(np.array(contrib), p)
    wm = np.array([[w[c, j] if contrib[c][j] > thresh else 0.0 for j in range(w.shape[1])] for c in range(w.shape[0])])
    return np.array([-logsumexp(wm @ z + b) for z in test]), (wm != 0).mean()


@pytest.mark.parametrize("p", [0, 30, 70, 90, 99])
def test_matches_naive(p, cpu_path):
    train, test, (w, b) = _problem()
    det = create("dice", p=p).fit({"features": train}, head=(w, b))
    got = det.score({"features": test}).numpy()
    want, kept = _naive_dice(train.double().numpy(), test.double().numpy(), w.double().numpy(), b.double().numpy(), p)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert det.kept_fraction_ == pytest.approx(kept)


def test_p0_keeps_all_but_the_smallest_and_edge_cases(cpu_path):
    train, test, head = _problem(1)
    det = create("dice", p=0).fit({"features": train}, head=head)
    assert det.kept_fraction_ == pytest.approx(1 - 1 / 40)
    s16 = create("dice").fit({"features": train.half()}, head=head).score({"features": test.half()})
    s = create("dice").fit({"features": train}, head=head).score({"features": test})
    assert torch.allclose(s16, s, rtol=1e-2, atol=1e-2)
    big = create("dice").fit({"features": train * 1e6}, head=head).score({"features": test * 1e6})
    assert torch.isfinite(big).all()
    with pytest.raises(OODLensError, match="p"):
        create("dice", p=120).fit({"features": train}, head=head)
