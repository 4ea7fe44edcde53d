"""MSP, Energy and Mahalanobis against naive per-sample / per-class computations of their formulas."""

import numpy as np
import pytest
import torch

from oodlens.detectors import Detector, create
from oodlens.errors import NotFittedError, OODLensError


def _naive_mahalanobis(train, labels, x):
    train, x = train.double().numpy(), x.double().numpy()
    classes = sorted(set(labels.tolist()))
    means = {c: train[labels.numpy() == c].mean(0) for c in classes}
    centred = np.stack([train[i] - means[int(c)] for i, c in enumerate(labels)])
    prec = np.linalg.pinv(centred.T @ centred / len(train), hermitian=True)
    out = []
    for row in x:  # loop over samples and classes on purpose
        out.append(min((row - means[c]) @ prec @ (row - means[c]) for c in classes))
    return np.array(out)


@pytest.mark.parametrize("d", [5, 40])  # 40 > samples per class: singular covariance, pseudo-inverse
def test_mahalanobis_equals_naive(d):
    g = torch.Generator().manual_seed(0)
    train = torch.randn(90, d, generator=g) + 3 * torch.randn(3, d, generator=g).repeat(30, 1)
    labels = torch.arange(3).repeat(30)
    x = torch.randn(17, d, generator=g) * 2
    det = create("mahalanobis").fit({"features": train}, labels)
    got = det.score({"features": x}).double().numpy()
    want = _naive_mahalanobis(train, labels, x)
    if d < 30:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    else:  # rank-deficient: the naive pinv uses a different cut-off, compare ranks
        assert (np.argsort(got) == np.argsort(want)).mean() > 0.8


def test_mahalanobis_large_norms_half_precision_one_sample_class():
    g = torch.Generator().manual_seed(1)
    train = torch.randn(61, 8, generator=g) + 1e4
    labels = torch.cat([torch.arange(3).repeat(20), torch.tensor([3])])  # class 3 has one sample
    det = create("mahalanobis").fit({"features": train}, labels)
    x = train[:5] + 0.5
    s32 = det.score({"features": x})
    assert torch.isfinite(s32).all()
    np.testing.assert_allclose(s32.numpy(), _naive_mahalanobis(train, labels, x), rtol=1e-3, atol=1e-2)
    det16 = create("mahalanobis").fit({"features": torch.randn(60, 8, generator=g).half()}, labels[:60])
    assert det16.score({"features": torch.randn(4, 8).half()}).dtype == torch.float32


def test_msp_energy_formulas():
    logits = torch.randn(20, 5)
    msp = create("msp").fit({"logits": logits})
    want = [-max(np.exp(r) / np.exp(r).sum()) for r in logits.double().numpy()]
    np.testing.assert_allclose(msp.score({"logits": logits}).numpy(), want, rtol=1e-5)
    for t in (1.0, 3.0):
        e = create("energy", temperature=t).fit({"logits": logits})
        want = [-t * np.log(np.sum(np.exp(r / t))) for r in logits.double().numpy()]
        np.testing.assert_allclose(e.score({"logits": logits}).numpy(), want, rtol=1e-5)
    with pytest.raises(OODLensError, match="temperature"):
        create("energy", temperature=0.0).fit({"logits": logits})


def test_contract_errors_and_params(tmp_path):
    det = create("mahalanobis")
    with pytest.raises(NotFittedError):
        det.score({"features": torch.zeros(2, 3)})
    with pytest.raises(OODLensError, match="needs class labels"):
        det.fit({"features": torch.zeros(4, 3)})
    with pytest.raises(OODLensError, match="at least 2 classes"):
        det.fit({"features": torch.randn(4, 3)}, torch.zeros(4))
    with pytest.raises(OODLensError, match="2-D"):
        det.fit({"features": torch.randn(4, 3, 2)}, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(OODLensError, match="no hyper-parameter"):
        create("energy").set_params(temp=2)
    with pytest.raises(OODLensError, match="unknown detector 'energie'; did you mean energy"):
        create("energie")
    e = create("energy", temperature=2.0)
    assert e.get_params() == {"temperature": 2.0, "logits": "logits"}
    e.fit({"logits": torch.randn(3, 4)}).save(tmp_path / "e.safetensors")
    loaded = Detector.load(tmp_path / "e.safetensors")
    assert loaded.get_params() == e.get_params() and loaded.is_fitted
    with pytest.raises(OODLensError, match="not a Mahalanobis"):
        type(create("mahalanobis")).load(tmp_path / "e.safetensors")


def test_check_finite_fast_path_and_exact_fallback():
    """A finite sum proves every value finite; a sum that overflows (finite but huge values) must not raise, and
    NaN / ±inf are found and located whatever the sum does."""
    from oodlens._checks import check_finite

    big = torch.full((4, 3), 3e38)  # the float32 sum overflows to inf; every value is finite
    assert check_finite(big, "big") is big
    assert check_finite(torch.full((5,), 60000.0).half(), "half") is not None  # a float16 sum overflows too
    for bad, where in ((float("nan"), (2, 1)), (float("inf"), (0, 2)), (-float("inf"), (3, 0))):
        t = torch.ones(4, 3)
        t[where] = bad
        with pytest.raises(OODLensError, match=rf"1 non-finite value\(s\).*first at index \({where[0]}, {where[1]}\)"):
            check_finite(t, "x")
    both = torch.zeros(6)
    both[1], both[4] = float("inf"), -float("inf")  # their sum is NaN: still reported, with the count
    with pytest.raises(OODLensError, match=r"2 non-finite"):
        check_finite(both, "x")
