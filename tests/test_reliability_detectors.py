"""Issue 10's silent-wrong cases, each checked against an independent oracle: the result is now right or the
error names the problem."""

import subprocess
import sys

import mpmath
import numpy as np
import pytest
import torch

import oodlens  # noqa: F401  (a bare import registers every detector)
from oodlens import Features, OODLensError
from oodlens.detectors import create
from oodlens.detectors._gaussian import fit_whitener
from oodlens.detectors.entropy import softmax_entropy
from oodlens.metrics import auroc
from oodlens.testing import make_toy_problem, toy_detector


@pytest.fixture(scope="module")
def toy():
    return make_toy_problem()


# -- residual / vim below their rank -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["residual", "vim"])
def test_principal_dim_at_or_above_rank_names_rank_and_valid_dim(name):
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(300, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 16, generator=g, dtype=torch.float64))
    head = (torch.randn(4, 16, generator=g), torch.zeros(4))
    with pytest.raises(OODLensError, match=r"span only 3 dimension.*dim=8.*\[1, 2\]"):
        create(name, dim=8).fit({"features": z.float()}, head=head)
    det = create(name, dim=2).fit({"features": z.float()}, head=head)  # a valid dim works
    ood = torch.randn(50, 16, generator=g) * 3
    s = det.score({"features": torch.cat([z[:50].float(), ood])})
    assert auroc(s[:50], s[50:]) > 0.9


# -- Gaussian family with N < D --------------------------------------------------------------------------------------
def _off_span_problem(d=384, n=42, rank=12):
    g = torch.Generator().manual_seed(1)
    span = torch.randn(rank, d, generator=g)
    x = torch.randn(n, rank, generator=g) @ span
    y = torch.arange(n) % 3
    idt = torch.randn(200, rank, generator=g) @ span
    q = torch.linalg.qr(span.T).Q
    noise = torch.randn(200, d, generator=g)
    return x, y, idt, idt + (noise - noise @ q @ q.T)  # OOD: moved off the training span only


@pytest.mark.parametrize("name", ["mahalanobis", "rmds", "multi_mahalanobis"])
def test_gaussian_catches_ood_off_the_training_span(name):
    x, y, idt, off = _off_span_problem()
    params = {"layers": ["features"]} if name == "multi_mahalanobis" else {}
    s = create(name, **params).fit({"features": x}, y).score({"features": torch.cat([idt, off])})
    assert auroc(s[:200], s[200:]) > 0.99  # default covariance="auto" shrinks (N=42 < 2·384)
    s = create(name, covariance="empirical", **params).fit({"features": x}, y).score({"features": torch.cat([idt, off])})
    assert abs(auroc(s[:200], s[200:]) - 0.5) < 0.05  # the pseudo-inverse is blind there (why auto shrinks)


def test_shrinkage_equals_sklearn_oas():
    from sklearn.covariance import OAS

    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 64, generator=g, dtype=torch.float64)
    oas = OAS(assume_centered=True).fit(x.numpy())
    w, rho = fit_whitener(x.T @ x / 40, 40, "shrinkage")
    assert rho == pytest.approx(oas.shrinkage_, rel=1e-12)
    np.testing.assert_allclose((w @ w.T).numpy(), oas.precision_, rtol=1e-9, atol=1e-12)


def test_auto_keeps_the_empirical_covariance_on_well_conditioned_data(toy):
    det = create("mahalanobis").fit(toy.train, toy.train_labels)  # N = 600 ≥ 2·16, λ_min/λ_max ≈ 1e-3
    assert det.shrinkage_ == 0.0
    ref = create("mahalanobis", covariance="empirical").fit(toy.train, toy.train_labels)
    assert torch.equal(det.score(toy.test_ood), ref.score(toy.test_ood))
    with pytest.raises(OODLensError, match="covariance must be one of"):
        create("mahalanobis", covariance="ridge")


# -- KNN / SHE at extreme norms, KNN tie order -------------------------------------------------------------------------
@pytest.mark.parametrize("scale,dtype", [(1e30, torch.float32), (1e-30, torch.float32), (1e300, torch.float64)])
def test_knn_and_she_cosine_are_scale_free(toy, scale, dtype):
    def scaled(f):
        return Features({**dict(f), "features": f["features"].to(dtype) * scale})

    for det in (create("knn", k=5), create("she", metric="cosine")):
        ref = det.clone().fit(toy.train, toy.train_labels).score(toy.test_id)
        s = det.clone().fit(scaled(toy.train), toy.train_labels).score(scaled(toy.test_id))
        torch.testing.assert_close(s.float(), ref, rtol=1e-5, atol=1e-6)


def test_knn_kth_distance_does_not_depend_on_bank_order():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(40, 8, generator=g)
    bank = torch.cat([base, base[:15], -base[:10], base[:10] * 3.0])  # duplicates and equal directions
    q = torch.randn(30, 8, generator=g)
    for k in (1, 2, 5, 17):
        ref = create("knn", k=k).fit({"features": bank}).score({"features": q})
        for seed in range(3):
            perm = torch.randperm(bank.shape[0], generator=torch.Generator().manual_seed(seed))
            s = create("knn", k=k).fit({"features": bank[perm]}).score({"features": q})
            assert torch.equal(s, ref)


# -- Entropy precision -------------------------------------------------------------------------------------------------
def _exact_entropy(row):
    mpmath.mp.dps = 60
    m = max(row)
    e = [mpmath.e ** (mpmath.mpf(float(v)) - m) for v in row]
    z = sum(e)
    return float(-sum(p / z * mpmath.log(p / z) for p in e if p > 0))


def test_entropy_float32_precision_on_near_certain_rows():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(60, 10, generator=g) * torch.rand(60, 1, generator=g) * 40
    logits[:4] = torch.tensor([[0.0, -16, -17, -18, -30, -30, -30, -30, -30, -30]])  # H ≈ 1e-6
    logits[4] = torch.tensor([5.0, 5, 1, 0, 0, 0, 0, 0, 0, 0])  # tied maxima
    exact = torch.tensor([_exact_entropy(r.tolist()) for r in logits], dtype=torch.float64)
    got = softmax_entropy(logits).double()
    keep = exact > 1e-30  # float32 cannot hold smaller values
    rel = ((got - exact).abs() / exact)[keep]
    assert float(rel.max()) < 1e-4  # was 5.6 % at H ≈ 1e-6 before the non-maximal mass was summed on its own


# -- hyper-parameters, labels, grad ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,params,fragment", [
    ("energy", {"temperature": float("nan")}, "temperature"),
    ("relation", {"threshold": float("nan")}, "threshold"),
    ("fused", {"logistic_c": float("inf")}, "logistic_c"),
    ("knn", {"k": 2.5}, "k=2.5"),
    ("gen", {"M": 2.5}, "M=2.5"),
    ("knn", {"sample_ratio": "half"}, "sample_ratio"),
])
def test_bad_hyper_parameters_are_refused_at_build(name, params, fragment):
    with pytest.raises(OODLensError, match=fragment):
        create(name, **params)


def test_bad_hyper_parameters_set_later_are_refused_at_fit(toy):
    det = create("knn")
    det.k = float("nan")
    with pytest.raises(OODLensError, match="k=nan"):
        det.fit(toy.train)
    with pytest.raises(OODLensError, match="no hyper-parameter"):
        create("knn", kk=3)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size(toy, batch_size):
    det = create("msp").fit(toy.train)
    with pytest.raises(OODLensError, match="batch_size"):
        det.score(toy.test_id, batch_size=batch_size)


def test_huge_labels_and_grad_inputs(toy):
    y = toy.train_labels.clone()
    y[y == 0] = 2 ** 62
    with pytest.raises(OODLensError, match="class indices 0..C-1"):
        create("mahalanobis").fit(toy.train, y)
    grad = Features({k: (v.clone().requires_grad_() if v.is_floating_point() else v) for k, v in toy.test_id.items()})
    for name in ("energy", "mahalanobis", "knn", "entropy", "gen"):
        det = create(name).fit(toy.train, toy.train_labels, head=toy.head)
        assert torch.equal(det.score(grad), det.score(toy.test_id))


def test_wrong_rank_is_named(toy):
    for name in ("ash_b", "rankfeat", "multi_mahalanobis"):
        det = toy_detector(create(name))
        f = det.required_features()[0]
        bad = Features({**dict(toy.train), f: toy.train[f].reshape(toy.train.n, -1)[:, 0]})
        with pytest.raises(OODLensError, match=f"feature '{f}' must be"):
            det.fit(bad, toy.train_labels, head=toy.head)


# -- a bare import ---------------------------------------------------------------------------------------------------
def test_every_listed_detector_is_creatable_after_a_bare_import():
    code = ("import oodlens\n"
            "from oodlens.detectors import available_detectors, create\n"
            "names = available_detectors()\n"
            "assert 'fused' in names, names\n"
            "for n in names: create(n)\n"
            "print(len(names))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 30  # every built-in method (the list grows; each one was created above)
