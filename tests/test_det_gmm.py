"""GMM against scipy's multivariate normal densities, one class at a time (loops are fine here)."""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from oodlens.detectors import create
from oodlens.detectors.gmm import per_class_covariances
from oodlens.detectors._gaussian import class_means
from oodlens.errors import OODLensError


def naive_gmm(train, labels, test, covariance="tied", reg=1e-6):
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    classes = sorted(set(labels.tolist()))
    d = train.shape[1]
    ridge = reg * np.trace(np.cov(train.T, bias=True)) / d * np.eye(d)
    means = [train[labels == c].mean(0) for c in classes]
    within = np.concatenate([train[labels == c] - means[i] for i, c in enumerate(classes)])
    tied = within.T @ within / len(train)
    logp = []
    for i, c in enumerate(classes):
        xc = train[labels == c] - means[i]
        cov = (tied if covariance == "tied" else xc.T @ xc / len(xc)) + ridge
        pi = len(xc) / len(train)
        if reg > 0:
            logp.append(np.log(pi) + multivariate_normal(means[i], cov).logpdf(test))
        else:  # pseudo-inverse and pseudo-determinant (scipy gives -inf off the covariance's span instead)
            ev = np.linalg.eigvalsh(cov)
            ev = ev[ev > 1e-10 * ev.max()]
            diff = test - means[i]
            maha = np.einsum("nd,de,ne->n", diff, np.linalg.pinv(cov, hermitian=True), diff)
            logp.append(np.log(pi) - 0.5 * (len(ev) * np.log(2 * np.pi) + np.log(ev).sum() + maha))
    return -logsumexp(np.stack(logp, 1), axis=1)


def data(n=90, d=5, c=3, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = 2 * torch.randn(c, d, generator=g)[y] + torch.randn(n, d, generator=g) * (1 + torch.arange(d) / d)
    t = torch.randn(20, d, generator=g) * 3
    return (x * scale).double(), y, (t * scale).double()


@pytest.mark.parametrize("covariance", ["tied", "per_class"])
@pytest.mark.parametrize("reg", [1e-6, 1e-2, 0.0])
def test_matches_scipy(covariance, reg):
    x, y, t = data()
    s = create("gmm", covariance=covariance, reg_covar=reg).fit({"features": x}, y).score({"features": t})
    np.testing.assert_allclose(s.numpy(), naive_gmm(x, y.numpy(), t, covariance, reg), rtol=1e-8, atol=1e-8)


def test_per_class_covariances_unbalanced():
    g = torch.Generator().manual_seed(1)
    y = torch.tensor([0] * 40 + [1] * 3 + [2] * 1 + [3] * 7)
    x = torch.randn(len(y), 4, generator=g, dtype=torch.float64)
    means, counts = class_means(x, y)
    covs = per_class_covariances(x, y, means, counts)
    for c in range(4):
        xc = x[y == c].numpy()
        np.testing.assert_allclose(covs[c].numpy(), np.cov(xc.T, bias=True).reshape(4, 4), atol=1e-12)


def test_one_sample_class_and_more_dims_than_samples():
    x, y, t = data(n=31, d=12, c=3)  # per-class covariances of rank <= 10 in 12 dims
    y = y.clone()
    y[:] = torch.where(y == 2, 1, y)
    y[0] = 2  # one sample
    for cov in ("tied", "per_class"):
        s = create("gmm", covariance=cov).fit({"features": x}, y).score({"features": t})
        np.testing.assert_allclose(s.numpy(), naive_gmm(x, y.numpy(), t, cov), rtol=1e-7)
    with pytest.raises(OODLensError, match="zero covariance"):
        create("gmm", covariance="per_class", reg_covar=0.0).fit({"features": x}, y)


def test_float16_and_huge_norms():
    x, y, t = data()
    for cov in ("tied", "per_class"):
        ref = naive_gmm(x.half().double(), y.numpy(), t.half().double(), cov)
        s16 = create("gmm", covariance=cov).fit({"features": x.half()}, y).score({"features": t.half()})
        np.testing.assert_allclose(s16.numpy(), ref, rtol=1e-4)
        # scaling every feature by 1e4 shifts the negative log-density by D·log(1e4), nothing else
        small = create("gmm", covariance=cov).fit({"features": x.float()}, y).score({"features": t.float()})
        big = create("gmm", covariance=cov).fit({"features": (x * 1e4).float()}, y).score({"features": (t * 1e4).float()})
        np.testing.assert_allclose((big - small).numpy(), x.shape[1] * math.log(1e4), rtol=1e-4)


def test_bad_hyper_parameters():
    x, y, _ = data()
    with pytest.raises(OODLensError, match="covariance"):
        create("gmm", covariance="full").fit({"features": x}, y)
    with pytest.raises(OODLensError, match="reg_covar"):
        create("gmm", reg_covar=-1.0).fit({"features": x}, y)


def test_singular_tied_covariance_uses_pseudo_determinant():
    x, y, t = data(n=20, d=30, c=3)  # tied covariance of rank <= 17 in 30 dims
    s = create("gmm", reg_covar=0.0).fit({"features": x}, y).score({"features": t})
    np.testing.assert_allclose(s.numpy(), naive_gmm(x, y.numpy(), t, "tied", 0.0), rtol=1e-6)


@pytest.mark.parametrize("covariance", ["tied", "per_class"])
def test_scoring_in_many_row_blocks_matches_scipy(covariance, monkeypatch):
    from oodlens.detectors import _gaussian, gmm

    x, y, t = data()
    det = create("gmm", covariance=covariance).fit({"features": x}, y)
    monkeypatch.setattr(_gaussian, "SCORE_BLOCK", 15)  # tied: 3 rows per block (7 blocks, the last one partial)
    monkeypatch.setattr(gmm, "_PER_CLASS_BLOCK", 45)   # per-class: width C·D = 15, 3 rows per block
    np.testing.assert_allclose(det.score({"features": t}).numpy(), naive_gmm(x, y.numpy(), t, covariance),
                               rtol=1e-8, atol=1e-8)
