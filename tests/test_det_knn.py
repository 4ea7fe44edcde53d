"""KNN against a naive loop over test rows (sorted Euclidean distances of L2-normalised features)."""

import numpy as np
import pytest
import torch

import oodlens.detectors.knn as knn_mod
from oodlens.detectors import Detector, create
from oodlens.detectors.knn import exact_topk
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


def test_ivf_recall_and_exact_when_probing_everything(tmp_path):
    x, t = clustered(n=2000, m=300)
    exact = create("knn", k=10, backend="torch").fit({"features": x})
    ivf = create("knn", k=10, search="ivf", backend="torch", seed=3).fit({"features": x})
    assert ivf.calibration_recall_ >= 0.99
    v_exact, _ = exact.neighbours({"features": t})
    v_ivf, _ = ivf.neighbours({"features": t})
    recall = (v_ivf >= v_exact[:, -1:] - 1e-6).float().mean(1)
    assert recall[:150].mean() >= 0.98  # ID queries: what the calibration targets
    assert recall[150:].mean() >= 0.5  # far-OOD queries lose neighbours (documented limitation of IVF)
    every = create("knn", k=10, search="ivf", nprobe=10_000, backend="torch").fit({"features": x})
    np.testing.assert_allclose(every.score({"features": t}).numpy(), naive_knn(x, t, 10), rtol=1e-5, atol=1e-6)
    ivf.save(tmp_path / "knn.safetensors")
    loaded = Detector.load(tmp_path / "knn.safetensors")
    assert torch.equal(loaded.score({"features": t}), ivf.score({"features": t}))


def test_ivf_rows_with_too_few_candidates_fall_back_to_exact():
    x, t = clustered(n=400)
    det = create("knn", k=30, search="ivf", nlist=40, nprobe=1, backend="torch").fit({"features": x})
    np.testing.assert_allclose(det.score({"features": t}).numpy(), naive_knn(x, t, 30), rtol=1e-5, atol=1e-6)


def test_errors():
    x, t = clustered()
    with pytest.raises(OODLensError, match="bank holds only"):
        create("knn", k=601).fit({"features": x})
    with pytest.raises(OODLensError, match="search"):
        create("knn", search="hnsw").fit({"features": x})
    with pytest.raises(OODLensError, match="sample_ratio"):
        create("knn", sample_ratio=0).fit({"features": x})
    det = create("knn", k=5).fit({"features": x})
    det.set_params(k=1000)
    with pytest.raises(OODLensError, match="bank holds"):
        det.score({"features": t})


def test_faiss_backend_matches_torch():
    pytest.importorskip("faiss")
    x, t = clustered()
    a = create("knn", k=7, backend="faiss").fit({"features": x}).score({"features": t})
    np.testing.assert_allclose(a.numpy(), naive_knn(x, t, 7), rtol=1e-5, atol=1e-6)
