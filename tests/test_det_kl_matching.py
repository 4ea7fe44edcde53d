"""KL-Matching: score = min over class templates d_c (mean softmax of the reference rows predicted as c) of
KL(p ‖ d_c); checked against loops in float64."""

import math

import pytest
import torch

from oodlens.detectors import create
from oodlens.detectors.kl_matching import log_mean_softmax_per_predicted_class
from oodlens.errors import OODLensError
from oodlens.features import Features


def _softmax_rows(logits: torch.Tensor) -> list[list[float]]:
    rows = []
    for row in logits.double().tolist():
        m = max(row)
        e = [math.exp(v - m) for v in row]
        rows.append([q / sum(e) for q in e])
    return rows


def _naive(reference: torch.Tensor, test: torch.Tensor, one_hot_for_absent: bool = False) -> torch.Tensor:
    ref = _softmax_rows(reference)
    c = reference.shape[1]
    templates = []
    for k in range(c):
        members = [p for p in ref if max(range(c), key=lambda j: p[j]) == k]
        if members:
            templates.append([sum(p[j] for p in members) / len(members) for j in range(c)])
        elif one_hot_for_absent:  # OpenOOD's convention: KL to a one-hot is infinite
            templates.append([1.0 if j == k else 0.0 for j in range(c)])
    out = []
    for p in _softmax_rows(test):
        kls = []
        for d in templates:
            kls.append(sum(pj * math.log(pj / dj) if dj > 0 else math.inf for pj, dj in zip(p, d) if pj > 0))
        out.append(min(kls))
    return torch.tensor(out, dtype=torch.float64)


def _logits(n: int, c: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed)) * scale


def test_matches_naive_formula():
    train, test = _logits(40, 5, 0), _logits(15, 5, 1)
    det = create("kl_matching").fit(Features(logits=train))
    assert torch.allclose(det.score(Features(logits=test)).double(), _naive(train, test), atol=1e-5, rtol=1e-5)


def test_validation_templates_replace_training_ones():
    train, val, test = _logits(40, 5, 0), _logits(30, 5, 2, scale=4.0), _logits(15, 5, 1)
    det = create("kl_matching").fit(Features(logits=train))
    before = det.score(Features(logits=test))
    det.fit_validation(Features(logits=val))
    after = det.score(Features(logits=test))
    assert torch.allclose(after.double(), _naive(val, test), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before, after)


def test_absent_class_and_single_member_class():
    # class 3 is never predicted; class 2 is predicted once
    train = torch.tensor([[5.0, 0, 0, 0], [4, 1, 0, -1], [0, 6, 1, 0], [1, 3, 0, 0], [0, 0, 3, 0]])
    test = _logits(12, 4, 3)
    det = create("kl_matching").fit(Features(logits=train))
    assert det.template_classes_.tolist() == [0, 1, 2]
    s = det.score(Features(logits=test)).double()
    assert torch.allclose(s, _naive(train, test), atol=1e-5, rtol=1e-5)
    assert torch.allclose(s, _naive(train, test, one_hot_for_absent=True), atol=1e-5, rtol=1e-5)
    # a test row equal to the single member of class 2 matches its template exactly
    assert float(det.score(Features(logits=train[4:5]))[0]) == pytest.approx(0.0, abs=1e-6)


def test_huge_logits_stay_finite():
    train, test = _logits(30, 6, 4, scale=1e4), _logits(10, 6, 5, scale=1e4)
    det = create("kl_matching").fit(Features(logits=train))
    s = det.score(Features(logits=test))
    assert torch.isfinite(det.log_templates_).all() and torch.isfinite(s).all() and (s >= 0).all()


def test_chunked_templates_equal_one_pass():
    train = _logits(50, 4, 6)
    a, ca = log_mean_softmax_per_predicted_class(train)
    b, cb = log_mean_softmax_per_predicted_class(train, chunk=7 * 4)  # chunks of 7 rows (C = 4): 8 chunks
    assert torch.equal(ca, cb) and torch.allclose(a, b, atol=1e-12)


def test_float16_and_bad_validation_shape():
    train, test = _logits(30, 5, 7), _logits(8, 5, 8)
    det = create("kl_matching").fit(Features(logits=train.half()))
    s = det.score(Features(logits=test.half()))
    assert s.dtype == torch.float32
    assert torch.allclose(s.double(), _naive(train.half().float(), test.half().float()), atol=1e-5, rtol=1e-5)
    with pytest.raises(OODLensError, match="shape"):
        det.fit_validation(Features(logits=_logits(10, 3, 9)))
