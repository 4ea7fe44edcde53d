"""RMDS against a naive per-class implementation of min_c [MD_c(z) − MD_0(z)] (numpy pseudo-inverses)."""

import numpy as np
import pytest
import torch

from oodlens.detectors import create
from oodlens.errors import OODLensError


def naive_rmds(train, labels, test):
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    classes = sorted(set(labels.tolist()))
    means = [train[labels == c].mean(0) for c in classes]
    within = np.concatenate([train[labels == c] - means[i] for i, c in enumerate(classes)])
    prec = np.linalg.pinv(within.T @ within / len(train), hermitian=True)
    mu0 = train.mean(0)
    prec0 = np.linalg.pinv((train - mu0).T @ (train - mu0) / len(train), hermitian=True)
    out = []
    for z in test:
        md0 = (z - mu0) @ prec0 @ (z - mu0)
        out.append(min((z - m) @ prec @ (z - m) - md0 for m in means))
    return np.array(out)


def data(n=90, d=6, c=3, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = (3 * torch.randn(c, d, generator=g)[y] + torch.randn(n, d, generator=g)) * scale
    t = (torch.randn(25, d, generator=g) * 3) * scale
    return x.double(), y, t.double()


def test_matches_naive():
    x, y, t = data()
    s = create("rmds").fit({"features": x}, y).score({"features": t})
    np.testing.assert_allclose(s.numpy(), naive_rmds(x, y.numpy(), t), rtol=1e-8, atol=1e-8)


def test_more_dimensions_than_samples():
    x, y, t = data(n=12, d=30, c=3)  # tied covariance rank <= 9, global rank <= 11
    # the pseudo-inverse path (the default "auto" shrinks here: N < 2·D)
    s = create("rmds", covariance="empirical").fit({"features": x}, y).score({"features": t})
    np.testing.assert_allclose(s.numpy(), naive_rmds(x, y.numpy(), t), rtol=1e-6, atol=1e-6)


def test_class_with_one_sample():
    x, y, t = data(n=31, d=4, c=3)
    y = y.clone()
    y[:] = torch.where(y == 2, 1, y)
    y[0] = 2  # class 2 holds one sample
    s = create("rmds").fit({"features": x}, y).score({"features": t})
    np.testing.assert_allclose(s.numpy(), naive_rmds(x, y.numpy(), t), rtol=1e-8, atol=1e-8)


def test_float16_and_float32_inputs():
    x, y, t = data()
    ref = naive_rmds(x, y.numpy(), t)
    s32 = create("rmds").fit({"features": x.float()}, y).score({"features": t.float()})
    np.testing.assert_allclose(s32.numpy(), ref, rtol=1e-5, atol=1e-4)
    det16 = create("rmds").fit({"features": x.half()}, y)
    s16 = det16.score({"features": t.half()})
    assert s16.dtype == torch.float32 and torch.isfinite(s16).all()
    ref16 = naive_rmds(x.half().double(), y.numpy(), t.half().double())
    np.testing.assert_allclose(s16.numpy(), ref16, rtol=1e-4, atol=1e-3)


def test_huge_norms_are_scale_free():
    x, y, t = data()
    small = create("rmds").fit({"features": x.float()}, y).score({"features": t.float()})
    big = create("rmds").fit({"features": (x * 1e4).float()}, y).score({"features": (t * 1e4).float()})
    np.testing.assert_allclose(big.numpy(), small.numpy(), rtol=1e-4, atol=1e-3)


def test_needs_two_classes():
    x, _, _ = data()
    with pytest.raises(OODLensError, match="2 classes"):
        create("rmds").fit({"features": x}, torch.zeros(len(x), dtype=torch.long))


def test_scoring_in_many_row_blocks_matches_naive(monkeypatch):
    from oodlens.detectors import _gaussian

    x, y, t = data()
    det = create("rmds").fit({"features": x}, y)
    monkeypatch.setattr(_gaussian, "SCORE_BLOCK", 40)  # 3 rows per block: 9 blocks, the last one partial
    np.testing.assert_allclose(det.score({"features": t}).numpy(), naive_rmds(x, y.numpy(), t), rtol=1e-8, atol=1e-8)
