"""ASH-P / ASH-B / ASH-S against a naive numpy implementation of the formulas, on vectors and on maps, through
each CPU path (compiled numba kernels, numpy fallback) and the torch path; the compiled per-row selection against
``numpy.partition`` on hard rows (ties, k = 1, k = n, constant rows, negative values, -0.0, huge and tiny
magnitudes, float64)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import oodlens.detectors._order_stats as order_stats
import oodlens.detectors._shaping as shaping
from oodlens.detectors import create
from oodlens.errors import OODLensError


@pytest.fixture(params=["compiled", "numpy"])
def cpu_path(request, monkeypatch):
    """Score on the CPU through the compiled kernels or through the numpy fallback."""
    if request.param == "compiled" and shaping.compiled_kernels() is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(shaping, "USE_COMPILED", request.param == "compiled")
    monkeypatch.setattr(shaping, "COMPILED_MIN_VALUES", 0)  # small test inputs take the compiled path too
    return request.param


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
def test_matches_naive(variant, shape, p, cpu_path):
    train, test, (w, b) = _problem(shape=shape)
    det = create(f"ash_{variant}", percentile=p).fit({"features": train}, head=(w, b))
    got = det.score({"features": test}).numpy()
    want = _naive_ash(test.double().numpy(), w.double().numpy(), b.double().numpy(), variant, p)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_defaults_follow_the_paper():
    assert create("ash_p").percentile == 60 and create("ash_b").percentile == 65 and create("ash_s").percentile == 90


def test_zero_row_float16_and_huge_norms(cpu_path):
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


def test_errors(cpu_path):
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
@pytest.mark.parametrize("data", ["continuous", "ties", "maps", "strided"])
def test_cpu_block_kernels_match_torch_path(monkeypatch, cpu_path, method, kwargs, data):
    """Both CPU scorers (compiled and numpy kernels on row blocks, several blocks here) give the torch ``_shape``
    path's scores, also with many ties at the k-th value (ASH keeps the entries torch.topk keeps), on spatial
    maps and on a non-contiguous input."""
    monkeypatch.setattr(shaping, "BLOCK_ELEMENTS", 100)
    monkeypatch.setattr(shaping, "HEAD_BLOCK_ELEMENTS", 300)
    monkeypatch.setattr(shaping, "COMPILED_BLOCK_ELEMENTS", 300)
    g = torch.Generator().manual_seed(3)
    spatial = data == "maps" and method.startswith(("ash", "scale"))
    shape = (6, 2, 2) if spatial else (12,)
    train = torch.randn(50, *shape, generator=g).abs()
    test = torch.randn(300, *shape, generator=g).abs()
    if data == "ties":
        test = torch.randint(0, 3, test.shape, generator=g).float()
    if data == "strided":
        test = torch.randn(24, 300, generator=g).abs().T[:, ::2]
        assert not test.is_contiguous()
    head = (torch.randn(5, shape[0], generator=g), torch.randn(5, generator=g))
    det = create(method, **kwargs).fit({"features": train}, head=head)
    h, factor = det._shape(test)
    want = shaping.head_energy(shaping.pool_spatial(h), det.head_, factor)
    torch.testing.assert_close(det.score({"features": test}), want, rtol=1e-6, atol=1e-5)


# -- the compiled selection ---------------------------------------------------------------------------------------
def _hard_rows(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "relu":
        return np.maximum(rng.standard_normal((300, 64), dtype=np.float32) + 0.3, 0)
    if kind == "signed":  # non-ReLU features: negative values, so the keys are not the raw bits
        return rng.standard_normal((300, 64), dtype=np.float32)
    if kind == "ties":  # a few distinct values: ties at the k-th value in almost every row
        return rng.integers(-2, 3, (300, 64)).astype(np.float32)
    if kind == "constant":
        return np.repeat(rng.standard_normal((300, 1), dtype=np.float32), 64, axis=1)
    if kind == "signed_zeros":  # −0.0 and +0.0 compare equal
        return np.where(rng.random((300, 64)) < 0.5, np.float32(-0.0), np.float32(0.0)) - (
            rng.random((300, 64)) < 0.2).astype(np.float32)
    if kind == "huge":
        return (rng.standard_normal((300, 64)) * 1e37).astype(np.float32)
    if kind == "wide":  # magnitudes from 1e-30 to 1e30: interpolation fails, key bisection takes over
        return (rng.standard_normal((300, 64)) * 10.0 ** rng.integers(-30, 30, (300, 64))).astype(np.float32)
    if kind == "float64":
        return rng.standard_normal((300, 64)) * 10.0 ** rng.integers(-200, 200, (300, 64))
    raise ValueError(kind)


HARD = ["relu", "signed", "ties", "constant", "signed_zeros", "huge", "wide", "float64"]


@pytest.mark.parametrize("kind", HARD)
def test_compiled_selection_equals_partition(monkeypatch, kind):
    """``top_k_rows_compiled``: the kept set {x ≥ threshold} is the k largest (or, on tied rows, every entry ≥
    the k-th largest, which is then the threshold), the sums are the top-k and row sums, and the shaped rows are
    those of the numpy fallback, exactly. Rows are split over 3 threads."""
    kernels = shaping.compiled_kernels()
    if kernels is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    a = _hard_rows(kind)
    n = a.shape[1]
    desc = -np.sort(-a, axis=1)
    scale = np.abs(a).astype(np.float64).sum(1)
    for k in (1, 2, 21, n // 2, n - 1, n):
        kth = desc[:, k - 1]
        out = np.full_like(a, np.nan)
        s1, s2, threshold, tied = order_stats.top_k_rows_compiled(kernels, a, k, kernels.PRUNE, out)
        np.testing.assert_array_equal(tied, (a >= kth[:, None]).sum(1) > k)
        np.testing.assert_array_equal(threshold[tied], kth[tied])
        np.testing.assert_array_equal(a >= threshold[:, None], a >= kth[:, None])
        np.testing.assert_array_equal(out, np.where(a >= kth[:, None], a, 0))
        assert np.all(np.abs(s2 - desc[:, :k].astype(np.float64).sum(1)) <= 1e-12 * scale)
        assert np.all(np.abs(s1 - a.sum(1, dtype=np.float64)) <= 1e-12 * scale)
        # the numpy fallback: same threshold on tied rows, same tied rows, same shaped values
        t_np, s2_np, tied_np = order_stats.top_k_threshold_sum_np(a, k)
        np.testing.assert_array_equal(tied, tied_np)
        np.testing.assert_array_equal(threshold[tied], t_np[tied])
        keep = order_stats.top_k_mask_np(a, k, t_np, np.zeros_like(tied_np), zero_ties_matter=False)
        np.testing.assert_array_equal(out, np.where(keep, a, 0))
        np.testing.assert_allclose(s2, s2_np, rtol=0, atol=1e-12 * scale.max())
        # ASH-B: s1/k in the row's dtype on the kept set; SCALE: the sums only, ``out`` untouched
        out_b = np.full_like(a, np.nan)
        order_stats.top_k_rows_compiled(kernels, a, k, kernels.BINARISE, out_b)
        value = (a.sum(1, dtype=np.float64) / k).astype(a.dtype)
        np.testing.assert_allclose(out_b, np.where(a >= kth[:, None], value[:, None], 0), rtol=0,
                                   atol=1e-12 * scale.max() / k)
        s1_s, s2_s, _, _ = order_stats.top_k_rows_compiled(kernels, a, k, kernels.STATS, None)
        np.testing.assert_allclose(s2_s, s2, rtol=0, atol=1e-12 * scale.max())  # sums: the order may differ
        # without the sums (ASH-P): the same kept set and values
        out_p = np.full_like(a, np.nan)
        none1, none2, threshold_p, tied_p = order_stats.top_k_rows_compiled(kernels, a, k, kernels.PRUNE, out_p, sums=False)
        assert none1 is None and none2 is None
        np.testing.assert_array_equal(out_p, out)
        np.testing.assert_array_equal(tied_p, tied)


@pytest.mark.parametrize("variant", ["p", "b", "s"])
def test_compiled_and_numpy_paths_agree_on_hard_rows(monkeypatch, variant):
    """Scores of the compiled and the numpy CPU path on rows with ties, negative values, constant rows."""
    if shaping.compiled_kernels() is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(1)
    rows = np.concatenate([_hard_rows("ties")[:60], _hard_rows("relu")[:60], _hard_rows("constant")[:20],
                           np.abs(_hard_rows("signed"))[:60]])
    test = torch.from_numpy(rows)
    head = (torch.from_numpy(rng.standard_normal((7, 64), dtype=np.float32)), torch.zeros(7))
    det = create(f"ash_{variant}", percentile=50).fit({"features": test}, head=head)
    monkeypatch.setattr(shaping, "COMPILED_BLOCK_ELEMENTS", 64 * 50)
    monkeypatch.setattr(shaping, "COMPILED_MIN_VALUES", 0)
    compiled = det.score({"features": test})
    monkeypatch.setattr(shaping, "USE_COMPILED", False)
    numpy_path = det.score({"features": test})
    torch.testing.assert_close(compiled, numpy_path, rtol=1e-6, atol=1e-6)
    # the naive formula breaks ties by index, torch.topk its own way: compare where the kept set is unique
    kth = -np.sort(-rows, axis=1)[:, 31]
    unique = ((rows >= kth[:, None]).sum(1) == 32) | ((kth == 0) & (variant != "b"))
    want = _naive_ash(rows.astype(np.float64), head[0].double().numpy(), head[1].double().numpy(), variant, 50)
    assert unique.sum() > 100
    np.testing.assert_allclose(compiled.numpy()[unique], want[unique], rtol=1e-5, atol=1e-5)


def test_importing_oodlens_compiles_nothing():
    """numba and the kernel module load on the first CPU score, not on import."""
    code = ("import sys, oodlens, oodlens.detectors; "
            "print('numba' in sys.modules, 'oodlens.detectors._select' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_compiled_energy_equals_float64_logsumexp(monkeypatch):
    """``energy_rows``: −logsumexp(f · logits + b) in float64, with and without the factor, also with huge factors
    (terms far below the maximum) and on several threads."""
    kernels = shaping.compiled_kernels()
    if kernels is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((300, 37)) * 10).astype(np.float32)
    bias = rng.standard_normal(37)
    factor = np.exp(rng.uniform(0, 6, 300))
    factor[:3] = [1.0, 1e30, 1e-30]
    for use in (False, True):
        out = np.empty(300)
        kernels.energy_rows(logits, factor if use else np.empty(0), bias, use, out)
        f = torch.from_numpy(factor if use else np.ones(300))[:, None]
        want = -torch.logsumexp(f * torch.from_numpy(logits).double() + torch.from_numpy(bias), 1).numpy()
        np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-13)


def test_small_inputs_skip_the_compiled_kernels(monkeypatch):
    """Below ``COMPILED_MIN_VALUES`` shaped values, fit and score use the numpy kernels: numba is never loaded
    (a small job does not pay its compile time)."""
    def refuse():
        raise AssertionError("compiled kernels requested for a small input")

    monkeypatch.setattr(shaping, "compiled_kernels", refuse)
    train, test, (w, b) = _problem()
    got = create("ash_s").fit({"features": train}, head=(w, b)).score({"features": test}).numpy()
    want = _naive_ash(test.double().numpy(), w.double().numpy(), b.double().numpy(), "s", 90)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def check_compiled_shaping(det, rows: torch.Tensor) -> None:
    """The detector's compiled block kernel writes exactly the numpy kernel's values, which equal its torch
    ``_shape`` path's (for the clip-type shapings: ReAct, VRA)."""
    kernels = shaping.compiled_kernels()
    if kernels is None:
        pytest.skip("numba is not installed")
    a = rows.numpy()
    want = np.full_like(a, np.nan)
    det._shape_block_cpu(a, want, order_stats.Workspace())
    got = np.full_like(a, np.nan)
    det._shape_block_compiled(kernels, a, got)
    np.testing.assert_array_equal(got, want)
    torch.testing.assert_close(torch.from_numpy(got), det._shape(rows)[0], rtol=0, atol=0)
