"""Mergeable sufficient statistics behind oodlens.scale (no Ray needed): shards merged by Chan et al.'s update equal
the statistics of all rows, also with classes missing from shards and large feature means; fits from merged
statistics equal the one-process fits; mismatched shards are refused."""

from __future__ import annotations

import pytest
import torch

from oodlens.detectors import get_detector
from oodlens.detectors._gaussian_stats import GaussianStats, gaussian_stats
from oodlens.detectors._principal import PrincipalStats, head_origin, principal_stats
from oodlens.detectors.base import Head
from oodlens.errors import OODLensError


def _data(offset: float = 0.0):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (900,), generator=g)
    x = torch.randn(900, 8, generator=g, dtype=torch.float64) + 3 * torch.nn.functional.one_hot(y, 8) + offset
    return x, y


def _naive(x, y, c=5):
    mu = torch.stack([x[y == k].mean(0) for k in range(c)])
    per = torch.stack([(x[y == k] - mu[k]).T @ (x[y == k] - mu[k]) for k in range(c)])
    m0 = x.mean(0)
    return mu, per.sum(0), per, (x - m0).T @ (x - m0) / x.shape[0]


@pytest.mark.parametrize("offset", [0.0, 1e4])  # means 10⁴ × the spread: no raw-moment cancellation
def test_merged_shards_equal_naive_statistics(offset):
    x, y = _data(offset)
    order = torch.argsort(y)  # sorted shards: most shards miss most classes
    parts = [gaussian_stats(x[order[i:i + 200]], y[order[i:i + 200]], per_class=True) for i in range(0, 900, 200)]
    m = GaussianStats.merge_all(parts)
    mu, s, per, total = _naive(x, y)
    scale = float(s.abs().max())
    assert torch.allclose(m.means, mu, rtol=0, atol=1e-10 * max(1.0, offset))
    assert torch.allclose(m.scatter, s, rtol=0, atol=1e-10 * scale)
    assert torch.allclose(m.class_scatter, per, rtol=0, atol=1e-10 * scale)
    assert torch.allclose(m.covariance()[1], total, rtol=0, atol=1e-10 * float(total.abs().max()))
    assert torch.equal(m.counts, torch.bincount(y, minlength=5).double())


@pytest.mark.parametrize("name,params", [("mahalanobis", {}), ("rmds", {}), ("gmm", {"covariance": "per_class"})])
def test_fit_from_merged_statistics_equals_fit(name, params):
    x, y = _data()
    x = x.float()
    per_class = params.get("covariance") == "per_class"
    stats = GaussianStats.merge_all([gaussian_stats(x[i:i + 300], y[i:i + 300], per_class=per_class)
                                     for i in range(0, 900, 300)])
    a = get_detector(name)(**params).fit_from_stats(stats)
    b = get_detector(name)(**params).fit({"features": x}, y)
    torch.testing.assert_close(a.score({"features": x}), b.score({"features": x}), rtol=1e-6, atol=1e-5)


def test_principal_statistics_merge_and_refusals():
    x, _ = _data()
    head = Head(torch.randn(3, 8, dtype=torch.float64), torch.randn(3, dtype=torch.float64))
    u = head_origin(head, 8)
    merged = principal_stats(x[:400], u).merge(principal_stats(x[400:], u))
    c = x - u
    assert torch.allclose(merged.moment, c.T @ c, rtol=0, atol=1e-10 * float((c.T @ c).abs().max()))
    a = get_detector("vim")(dim=4).fit_from_stats(merged, head)
    a.fit_alpha(a.alpha_sums(x[:400]) + a.alpha_sums(x[400:]))
    b = get_detector("vim")(dim=4).fit({"features": x}, head=head)
    assert abs(a.alpha_ - b.alpha_) <= 1e-10 * abs(b.alpha_)
    with pytest.raises(OODLensError, match="different origins"):
        merged.merge(principal_stats(x, u + 1))
    with pytest.raises(OODLensError, match="same feature width"):
        merged.merge(PrincipalStats(torch.tensor(1.0), torch.zeros(9, dtype=torch.float64),
                                    torch.zeros(9, 9, dtype=torch.float64)))
    with pytest.raises(OODLensError, match="same feature width"):
        gaussian_stats(x, torch.zeros(900, dtype=torch.long)).merge(gaussian_stats(x[:, :5], torch.zeros(900).long()))
