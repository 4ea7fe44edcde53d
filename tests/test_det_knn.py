"""KNN against a naive loop over test rows (sorted Euclidean distances of L2-normalised features)."""

import numpy as np
import pytest
import torch

import oodlens.detectors.knn as knn_mod
from oodlens.detectors import Detector, create
from oodlens.detectors.knn import exact_topk, select_topk
from oodlens.errors import OODLensError


def naive_knn(train, test, k):
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    out = []
    for z in test:
        z = z / np.linalg.norm(z)
        out.append(np.sort(np.linalg.norm(train - z, axis=1))[k - 1])
    return np.array(out)


def clustered(n=600, m=150, d=16, c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = 3 * torch.randn(c, d, generator=g)
    x = mu[torch.arange(n) % c] + torch.randn(n, d, generator=g)
    t = torch.cat([mu[torch.arange(m // 2) % c] + torch.randn(m // 2, d, generator=g),
                   3 * torch.randn(m - m // 2, d, generator=g)])
    return x, t


@pytest.mark.parametrize("k", [1, 7, 50])
def test_exact_matches_naive(k):
    x, t = clustered()
    s = create("knn", k=k, backend="torch").fit({"features": x}).score({"features": t})
    np.testing.assert_allclose(s.numpy(), naive_knn(x, t, k), rtol=1e-5, atol=1e-6)


def test_column_blocks_merge_running_topk(monkeypatch):
    x, t = clustered()
    monkeypatch.setattr(knn_mod, "_BLOCK_CPU", 256)  # bank of 600 > one block: column blocks + merges
    v, i = exact_topk(torch.nn.functional.normalize(t, dim=1), torch.nn.functional.normalize(x, dim=1), 9)
    full = torch.nn.functional.normalize(t, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    ref_v, _ = full.topk(9, dim=1)
    torch.testing.assert_close(v, ref_v)
    torch.testing.assert_close(full.gather(1, i), ref_v)
    s = create("knn", k=9, backend="torch").fit({"features": x}).score({"features": t})
    np.testing.assert_allclose(s.numpy(), naive_knn(x, t, 9), rtol=1e-5, atol=1e-6)


def test_float16_and_huge_norms():
    x, t = clustered()
    s16 = create("knn", k=5, backend="torch").fit({"features": x.half()}).score({"features": t.half()})
    np.testing.assert_allclose(s16.numpy(), naive_knn(x.half(), t.half(), 5), rtol=1e-5, atol=1e-6)
    big = create("knn", k=5, backend="torch").fit({"features": x * 1e4}).score({"features": t * 1e4})
    np.testing.assert_allclose(big.numpy(), naive_knn(x, t, 5), rtol=1e-5, atol=1e-6)


def test_sample_ratio_is_seeded():
    x, t = clustered()
    a = create("knn", k=3, sample_ratio=0.5, seed=4, backend="torch").fit({"features": x})
    b = create("knn", k=3, sample_ratio=0.5, seed=4, backend="torch").fit({"features": x})
    assert a.bank_.shape[0] == 300 and torch.equal(a.bank_, b.bank_)
    keep = torch.randperm(600, generator=torch.Generator().manual_seed(4))[:300].sort().values
    np.testing.assert_allclose(a.score({"features": t}).numpy(), naive_knn(x[keep], t, 3), rtol=1e-5, atol=1e-6)


def low_rank(n=3000, m=400, d=32, rank=6, seed=0):
    """Unit-norm-ish features near a rank-6 subspace (ID) and, for the second half of the queries, off it."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d, generator=g)
    x = torch.randn(n, rank, generator=g) @ basis + 0.05 * torch.randn(n, d, generator=g)
    t = torch.cat([torch.randn(m // 2, rank, generator=g) @ basis + 0.05 * torch.randn(m // 2, d, generator=g),
                   torch.randn(m - m // 2, rank, generator=g) @ basis + 0.5 * torch.randn(m - m // 2, d, generator=g)])
    return x, t


def test_select_topk_equals_topk():
    g = torch.Generator().manual_seed(0)
    for m, k in ((5000, 10), (5003, 10), (5000, 300), (64, 5)):
        s = torch.randn(9, m, generator=g)
        s[0, -2:] = 50.0  # the best values in the tail columns outside the groups
        v, i = select_topk(s, k)
        ref, _ = s.topk(k, dim=1)
        torch.testing.assert_close(v, ref, rtol=0, atol=0)
        torch.testing.assert_close(s.gather(1, i), ref, rtol=0, atol=0)


def test_pca_recall_against_exact():
    x, t = low_rank()
    exact = create("knn", k=10, backend="torch").fit({"features": x})
    approx = create("knn", k=10, search="pca", backend="torch", seed=1).fit({"features": x})
    assert approx.dim_ is not None and approx.dim_ < 32  # the approximation pays on this problem
    assert min(approx.calibration_recall_.values()) >= 0.99
    v_exact, _ = exact.neighbours({"features": t})
    v_pca, i_pca = approx.neighbours({"features": t})
    recall = (v_pca >= v_exact[:, -1:] - 1e-6).float().mean(1)
    assert recall[:200].mean() >= 0.99 and recall[200:].mean() >= 0.95
    # re-ranked similarities are exact inner products of the returned neighbours
    q = torch.nn.functional.normalize(t, dim=1)
    torch.testing.assert_close(v_pca, (approx.bank_[i_pca] * q[:, None]).sum(2), rtol=1e-5, atol=1e-6)
    # the score is the exact distance wherever the k-th neighbour was found
    s_pca, s_exact = approx.score({"features": t}), exact.score({"features": t})
    found = (v_pca[:, -1] - v_exact[:, -1]).abs() < 1e-6
    assert found.float().mean() >= 0.95
    np.testing.assert_allclose(s_pca[found].numpy(), naive_knn(x, t, 10)[found.numpy()], rtol=1e-5, atol=1e-6)


def test_pca_with_every_candidate_is_exact():
    x, t = clustered()
    det = create("knn", k=7, search="pca", dim=3, candidates=100.0, backend="torch").fit({"features": x})
    assert det.dim_ == 3 and det.projection_.shape == (16, 3)
    np.testing.assert_allclose(det.score({"features": t}).numpy(), naive_knn(x, t, 7), rtol=1e-5, atol=1e-6)


def test_pca_is_deterministic_and_round_trips(tmp_path):
    x, t = low_rank(n=1500, m=100)
    a = create("knn", k=5, search="pca", seed=3, backend="torch").fit({"features": x})
    b = create("knn", k=5, search="pca", seed=3, backend="torch").fit({"features": x})
    assert (a.dim_, a.candidates_, a.calibration_recall_) == (b.dim_, b.candidates_, b.calibration_recall_)
    assert torch.equal(a.projection_, b.projection_)
    assert torch.equal(a.score({"features": t}), b.score({"features": t}))
    a.save(tmp_path / "knn.safetensors")
    loaded = Detector.load(tmp_path / "knn.safetensors")
    assert torch.equal(loaded.projection_, a.projection_) and loaded.dim_ == a.dim_
    assert loaded.candidates_ == a.candidates_
    assert torch.equal(loaded.score({"features": t}), a.score({"features": t}))


def test_pca_falls_back_to_exact_when_it_cannot_pay():
    x, t = clustered(n=300)  # isotropic-ish 16-d clusters, tiny bank: the projection is not cheaper
    det = create("knn", k=5, search="pca", backend="torch").fit({"features": x})
    assert det.dim_ is None and det.projection_ is None
    np.testing.assert_allclose(det.score({"features": t}).numpy(), naive_knn(x, t, 5), rtol=1e-5, atol=1e-6)
    det.set_params(search="exact").fit({"features": x})  # refit clears the projection state
    assert not hasattr(det, "dim_")


def test_errors():
    x, t = clustered()
    with pytest.raises(OODLensError, match="bank holds only"):
        create("knn", k=601).fit({"features": x})
    with pytest.raises(OODLensError, match="search"):
        create("knn", search="hnsw").fit({"features": x})
    with pytest.raises(OODLensError, match="sample_ratio"):
        create("knn", sample_ratio=0).fit({"features": x})
    with pytest.raises(OODLensError, match="dim"):
        create("knn", search="pca", dim=17).fit({"features": x})
    with pytest.raises(OODLensError, match="candidates"):
        create("knn", search="pca", candidates=0.5).fit({"features": x})
    with pytest.raises(OODLensError, match="synthetic_mix"):
        create("knn", search="pca", synthetic_mix=2).fit({"features": x})
    det = create("knn", k=5).fit({"features": x})
    det.set_params(k=1000)
    with pytest.raises(OODLensError, match="bank holds"):
        det.score({"features": t})


def test_faiss_backend_matches_torch():
    pytest.importorskip("faiss")
    x, t = clustered()
    a = create("knn", k=7, backend="faiss").fit({"features": x}).score({"features": t})
    np.testing.assert_allclose(a.numpy(), naive_knn(x, t, 7), rtol=1e-5, atol=1e-6)
