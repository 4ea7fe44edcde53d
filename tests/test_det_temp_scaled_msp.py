"""Temperature-scaled MSP: T minimises the validation NLL (checked against a bounded scalar search on a naive NLL),
and score = log(1 − max softmax(f/T)) (checked against a float64 loop; rank-equal to −MSP)."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from oodlens.detectors import create
from oodlens.detectors.temp_scaled_msp import fit_temperature
from oodlens.errors import OODLensError
from oodlens.features import Features


def _naive_nll(logits: torch.Tensor, labels: torch.Tensor, t: float) -> float:
    total = 0.0
    for row, y in zip(logits.double().tolist(), labels.tolist()):
        z = [v / t for v in row]
        m = max(z)
        total += m + math.log(sum(math.exp(v - m) for v in z)) - z[y]
    return total / len(labels)


def _naive_score(logits: torch.Tensor, t: float) -> torch.Tensor:
    out = []
    for row in logits.double().tolist():
        z = [v / t for v in row]
        m = max(z)
        e = [math.exp(v - m) for v in z]
        top = e.index(max(e))
        out.append(math.log(sum(q for j, q in enumerate(e) if j != top) / sum(e)))  # 1 − max p, no cancellation
    return torch.tensor(out, dtype=torch.float64)


def _naive_msp(logits: torch.Tensor, t: float) -> torch.Tensor:
    return torch.tensor([max(math.exp(v / t) for v in r) / sum(math.exp(v / t) for v in r)
                         for r in logits.double().tolist()], dtype=torch.float64)


def _noisy_problem(seed: int, n: int = 200, c: int = 5, scale: float = 4.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    f = scale * torch.nn.functional.one_hot(y, c).float() + 2.0 * torch.randn(n, c, generator=g)
    return f, y


@pytest.mark.parametrize("seed,scale", [(0, 4.0), (1, 1.0), (2, 7.0)])
def test_temperature_minimises_naive_nll(seed, scale):
    f, y = _noisy_problem(seed, scale=scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an interior optimum: no bound warning
        t = fit_temperature(f, y)
    ref = minimize_scalar(lambda u: _naive_nll(f, y, math.exp(u)), bounds=(math.log(0.01), math.log(100)),
                          method="bounded", options={"xatol": 1e-10})
    assert t == pytest.approx(math.exp(ref.x), rel=1e-5)
    assert _naive_nll(f, y, t) <= ref.fun + 1e-12


def test_fit_then_validation_and_score_formula():
    f_tr, y_tr = _noisy_problem(3, scale=8.0)
    f_val, y_val = _noisy_problem(4, scale=3.0)
    f_te, _ = _noisy_problem(5, n=30)
    det = create("temp_scaled_msp").fit(Features(logits=f_tr), y_tr)
    assert det.temperature_ == 1.0  # plain MSP until validation data arrive
    assert torch.allclose(det.score(Features(logits=f_te)).double(), _naive_score(f_te, 1.0), atol=1e-5, rtol=1e-5)
    det.fit_validation(Features(logits=f_val), y_val)
    t = det.temperature_
    assert t != 1.0 and t == pytest.approx(fit_temperature(f_val, y_val))
    s = det.score(Features(logits=f_te))
    assert torch.allclose(s.double(), _naive_score(f_te, t), atol=1e-5, rtol=1e-5)
    # a monotone map of −MSP(f/T): identical ranking
    msp = _naive_msp(f_te, t)
    assert np.array_equal(np.argsort(-msp.numpy(), kind="stable"), np.argsort(s.numpy(), kind="stable"))


def test_perfectly_classified_validation_hits_the_lower_bound_without_ties():
    f = torch.tensor([[9.0, 0, 0], [0, 8.0, 1.0], [0.5, 0, 7.0], [12.0, 2.0, 0]])
    y = torch.tensor([0, 1, 2, 0])
    det = create("temp_scaled_msp", min_temperature=0.05).fit(Features(logits=f), y)
    with pytest.warns(RuntimeWarning, match="min_temperature"):
        det.fit_validation(Features(logits=f), y)
    assert det.temperature_ == 0.05
    s = det.score(Features(logits=f))
    assert torch.isfinite(s).all() and len(set(s.tolist())) == 4  # MSP would be 1.0 (tied) for all four
    assert torch.allclose(s.double(), _naive_score(f, 0.05), rtol=1e-5)


def test_float16():
    f_val, y_val = _noisy_problem(6)
    det = create("temp_scaled_msp").fit(Features(logits=f_val.half()), y_val)
    det.fit_validation(Features(logits=f_val.half()), y_val)
    s = det.score(Features(logits=f_val[:10].half()))
    assert s.dtype == torch.float32
    assert torch.allclose(s.double(), _naive_score(f_val[:10].half().float(), det.temperature_), atol=1e-5, rtol=1e-5)


def test_errors():
    f, y = _noisy_problem(7, n=20)
    det = create("temp_scaled_msp").fit(Features(logits=f), y)
    with pytest.raises(OODLensError, match="labels"):
        det.fit_validation(Features(logits=f))
    with pytest.raises(OODLensError, match="classes"):
        det.fit_validation(Features(logits=f), torch.full((20,), 7))
    with pytest.raises(OODLensError, match="shape"):
        det.fit_validation(Features(logits=f[:, :3]), y)
    with pytest.raises(OODLensError, match="temperature"):
        create("temp_scaled_msp", min_temperature=0.0).fit(Features(logits=f))
    with pytest.raises(OODLensError, match="temperature"):
        create("temp_scaled_msp", min_temperature=5.0, max_temperature=1.0).fit(Features(logits=f))
    with pytest.raises(OODLensError, match="2 classes"):
        create("temp_scaled_msp").fit(Features(logits=f[:, :1]))


def test_many_row_blocks_mixing_underflowing_rows(monkeypatch):
    from oodlens.detectors import _logit_only

    g = torch.Generator().manual_seed(8)
    f = 3.0 * torch.randn(31, 6, generator=g)
    f[::3, 0] += 40.0            # every third row: a top logit far ahead (the others underflow after scaling)
    f[1, :] = torch.tensor([5.0, 4.99, -30.0, 0.0, 1.0, 2.0])   # near tie and one entry that underflows alone
    det = create("temp_scaled_msp").fit(Features(logits=f))
    det.temperature_ = 0.1
    monkeypatch.setattr(_logit_only, "LOGIT_BLOCK", 24)  # 4 rows per block: 8 blocks, the last one partial
    s = det.score(Features(logits=f))
    assert torch.isfinite(s).all()
    assert torch.allclose(s.double(), _naive_score(f, 0.1), atol=1e-5, rtol=1e-5)
    low = s[::3]
    assert (low < math.log(1e-30)).all()  # rows whose 1 − MSP underflows a sum of exps stay exact
