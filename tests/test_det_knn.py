"""KNN against a naive loop over test rows (sorted Euclidean distances of L2-normalised features)."""

import numpy as np
import pytest
import torch

import oodlens.detectors._knn_search as knn_mod
from oodlens.detectors import Detector, create
from oodlens.detectors._knn_search import exact_topk, select_topk
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
        ref, _ = s.topk(k, dim=1)
        for strided in (False, True):  # the CPU and the GPU group layouts
            v, i = select_topk(s, k, strided=strided)
            torch.testing.assert_close(v, ref, rtol=0, atol=0)
            torch.testing.assert_close(s.gather(1, i), ref, rtol=0, atol=0)


def exact_reference(x, t, k):
    q, b = torch.nn.functional.normalize(t, dim=1), torch.nn.functional.normalize(x, dim=1)
    return (q.double() @ b.double().T).topk(k, dim=1).values


@pytest.mark.parametrize("k", [1, 10, 50])
def test_half_search_equals_exact(k):
    x, t = low_rank()
    det = create("knn", k=k, search="half", backend="torch").fit({"features": x})
    v, i = det.neighbours({"features": t})
    ref = exact_reference(x, t, k)
    torch.testing.assert_close(v.double(), ref, rtol=0, atol=1e-6)  # recall 1: the exact similarities
    q = torch.nn.functional.normalize(t, dim=1)
    torch.testing.assert_close(v, (det.bank_[i] * q[:, None]).sum(2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(det.score({"features": t}).numpy(), naive_knn(x, t, k), rtol=1e-5, atol=1e-6)


def near_copies():
    """30 near-copies (1e-5 apart: below float16 resolution) of each of 40 unit rows, and 20 queries near them."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(40, 24, generator=g), dim=1)
    x = (base.repeat(30, 1) + 1e-5 * torch.randn(1200, 24, generator=g))
    return x, base[:20] + 0.01 * torch.randn(20, 24, generator=g)


def test_half_certificate_sends_near_ties_to_the_exact_pass():
    """Bank rows that differ from the best ones by less than float16 resolution: the half pass cannot order them,
    so with few candidates the certificate fails and those queries are searched exactly — results stay exact."""
    x, t = near_copies()
    det = create("knn", k=8, search="half", candidates=1.0, backend="torch").fit({"features": x})
    v, _ = det.neighbours({"features": t})
    assert det.last_fallbacks > 0
    torch.testing.assert_close(v.double(), exact_reference(x, t, 8), rtol=0, atol=1e-6)
    # enough candidates to cover every near-copy: certified without the exact pass
    det.set_params(candidates=4.0)
    v, _ = det.neighbours({"features": t})
    assert det.last_fallbacks == 0
    torch.testing.assert_close(v.double(), exact_reference(x, t, 8), rtol=0, atol=1e-6)


@pytest.mark.parametrize("window", [1, 32])
def test_half_kth_equals_exact_kth(window):
    """The scoring path re-ranks only the rows whose half products are within 2e(q) of the k-th: its k-th value is
    the exact one; a window too small for the uncertain rows sends those queries to the exact pass."""
    for x, t in (low_rank(), near_copies()):
        b, q = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(t, dim=1)
        prepared = knn_mod.HalfBank(b)
        for k in (1, 8, 20):
            v, i, fallbacks = knn_mod.half_kth(q, b, prepared, k, 3 * k, window=window)
            ref = exact_reference(x, t, k)[:, -1]
            torch.testing.assert_close(v.double(), ref, rtol=0, atol=1e-6)
            torch.testing.assert_close((b[i] * q).sum(1).double(), ref, rtol=0, atol=1e-6)
            if window == 1 and k > 1:
                assert fallbacks > 0


def test_half_error_bound_holds():
    x, t = low_rank(n=500, m=300)
    b = torch.nn.functional.normalize(x, dim=1)
    q = torch.nn.functional.normalize(t, dim=1) * 3.0  # the bound must also hold off the unit sphere
    prepared = knn_mod.HalfBank(b)
    bound = knn_mod.half_error_bound(q, q.half(), prepared)
    err = ((q.half() @ prepared.low.T).double() - q.double() @ b.double().T).abs().amax(1)
    assert torch.all(err <= bound) and torch.all(bound < 0.01)


def test_half_search_round_trips(tmp_path):
    x, t = low_rank(n=1500, m=100)
    a = create("knn", k=5, search="half", backend="torch").fit({"features": x})
    a.save(tmp_path / "knn.safetensors")
    loaded = Detector.load(tmp_path / "knn.safetensors")
    assert loaded.get_params() == a.get_params()
    assert torch.equal(loaded.score({"features": t}), a.score({"features": t}))


def test_errors():
    x, t = clustered()
    with pytest.raises(OODLensError, match="bank holds only"):
        create("knn", k=601).fit({"features": x})
    with pytest.raises(OODLensError, match="search"):
        create("knn", search="hnsw").fit({"features": x})
    with pytest.raises(OODLensError, match="sample_ratio"):
        create("knn", sample_ratio=0).fit({"features": x})
    with pytest.raises(OODLensError, match="candidates"):
        create("knn", search="half", candidates=0.5).fit({"features": x})
    det = create("knn", k=5).fit({"features": x})
    det.set_params(k=1000)
    with pytest.raises(OODLensError, match="bank holds"):
        det.score({"features": t})


def test_faiss_backend_matches_torch():
    pytest.importorskip("faiss")
    x, t = clustered()
    a = create("knn", k=7, backend="faiss").fit({"features": x}).score({"features": t})
    np.testing.assert_allclose(a.numpy(), naive_knn(x, t, 7), rtol=1e-5, atol=1e-6)
