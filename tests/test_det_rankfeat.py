"""RankFeat against a naive per-sample numpy SVD."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from oodlens.detectors import create
from oodlens.errors import OODLensError


def _problem(seed=0, c_feat=6, hw=(3, 4), c=5):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(30, c_feat, *hw, generator=g).abs()
    test = torch.randn(15, c_feat, *hw, generator=g).abs() * 2
    head = (torch.randn(c, c_feat, generator=g), torch.randn(c, generator=g))
    return train, test, head


def _naive_rankfeat(test, w, b):
    out = []
    for m in test:
        x = m.reshape(m.shape[0], -1)
        u, s, vt = np.linalg.svd(x, full_matrices=False)
        x = x - s[0] * np.outer(u[:, 0], vt[0])
        out.append(-logsumexp(w @ x.mean(1) + b))
    return np.array(out)


@pytest.mark.parametrize("c_feat,hw", [(6, (3, 4)), (16, (2, 2)), (3, (5, 5)), (4, (7,))])
def test_matches_naive(c_feat, hw):
    train, test, (w, b) = _problem(c_feat=c_feat, hw=hw)
    det = create("rankfeat", features="map").fit({"map": train}, head=(w, b))
    got = det.score({"map": test}).numpy()
    want = _naive_rankfeat(test.double().numpy(), w.double().numpy(), b.double().numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_edge_cases():
    train, test, head = _problem(1)
    det = create("rankfeat", features="map").fit({"map": train}, head=head)
    s = det.score({"map": test})
    s16 = create("rankfeat", features="map").fit({"map": train.half()}, head=head).score({"map": test.half()})
    assert torch.allclose(s16, s, rtol=1e-2, atol=1e-2)
    rank1 = torch.einsum("nc,nk->nck", torch.rand(4, 6), torch.rand(4, 12)).view(4, 6, 3, 4)
    # a rank-1 map is removed entirely: the logits are the bias
    np.testing.assert_allclose(det.score({"map": rank1}).numpy(), -logsumexp(head[1].numpy()) * np.ones(4),
                               rtol=1e-5, atol=1e-5)
    assert torch.isfinite(det.score({"map": test * 1e6})).all()
    with pytest.raises(OODLensError, match="spatial feature map"):
        create("rankfeat", features="map").fit({"map": train.mean((2, 3))}, head=head)


def test_top_eigenvector_matches_eigh():
    from oodlens.detectors.rankfeat import top_eigenvector

    g = torch.Generator().manual_seed(5)
    x = torch.randn(50, 9, 7, generator=g, dtype=torch.float64)
    a = x @ x.transpose(1, 2)
    a[0] = torch.diag(torch.tensor([3.0, 3.0 - 1e-9, 1, 1, 0.5, 0, 0, 0, 0], dtype=torch.float64))  # tiny gap
    a[1] = 0.0  # zero matrix: zero vector, no NaN
    v = top_eigenvector(a)[:, :, 0]
    want = torch.linalg.eigh(a).eigenvectors[:, :, -1]
    cos = (v * want).sum(1).abs()
    assert torch.allclose(cos[2:], torch.ones(48, dtype=torch.float64), atol=1e-12)
    assert abs(float(cos[0]) - 1) < 1e-6 and torch.equal(v[1], torch.zeros(9, dtype=torch.float64))


@pytest.mark.parametrize("c_feat,hw", [(6, (3, 4)), (3, (5, 5))])  # the HW × HW and the C × C Gram matrix
def test_many_row_blocks_match_naive(c_feat, hw, monkeypatch):
    import oodlens.detectors.rankfeat as rankfeat

    train, test, (w, b) = _problem(seed=3, c_feat=c_feat, hw=hw)
    det = create("rankfeat", features="map").fit({"map": train}, head=(w, b))
    monkeypatch.setattr(rankfeat, "_BLOCK", 4 * (c_feat * int(np.prod(hw)) + 4 * min(c_feat, int(np.prod(hw))) ** 2))
    got = det.score({"map": test.double()}).numpy()  # 4 rows per block: 4 blocks, the last one partial
    want = _naive_rankfeat(test.double().numpy(), w.double().numpy(), b.double().numpy())
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
