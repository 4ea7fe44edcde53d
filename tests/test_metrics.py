"""Metric parity with scikit-learn on random and heavily tied scores, both FPR conventions, bad input."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from oodlens.errors import OODLensError
from oodlens.metrics import (
    accuracy, aupr_in, aupr_out, auroc, detection_accuracy, fpr_at_tpr, id_rejected_at_ood_caught, ood_accepted_at_id_kept,
    ood_metrics,
)


def _cases():
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        a, b = rng.normal(size=500).astype(dtype), rng.normal(0.7, size=300).astype(dtype)
        yield f"random-{np.dtype(dtype).name}", a, b
        yield f"tied-{np.dtype(dtype).name}", np.round(a * 2).astype(dtype), np.round(b * 2).astype(dtype)
    yield "all-tied", np.zeros(50), np.zeros(40)
    yield "integer", rng.integers(0, 3, 200), rng.integers(1, 4, 100)
    yield "separated", rng.normal(size=100), rng.normal(size=100) + 100


def _sk_fpr(y_pos, s, level):
    fpr, tpr, _ = roc_curve(y_pos, s, drop_intermediate=False)
    return fpr[np.searchsorted(tpr, level - 1e-12)]


@pytest.mark.parametrize("name,a,b", list(_cases()), ids=[c[0] for c in _cases()])
def test_parity_with_sklearn(name, a, b):
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    s = np.r_[a, b].astype(np.float64)
    assert auroc(a, b) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert aupr_out(a, b) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert aupr_in(a, b) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    for level in (0.8, 0.95):
        assert ood_accepted_at_id_kept(a, b, level) == pytest.approx(_sk_fpr(1 - y, -s, level), abs=1e-12)
        assert id_rejected_at_ood_caught(a, b, level) == pytest.approx(_sk_fpr(y, s, level), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    assert detection_accuracy(a, b) == pytest.approx(max(0.5 * tpr + 0.5 * (1 - fpr)), abs=1e-12)
    m = ood_metrics(a, b)
    assert m["auroc"] == pytest.approx(auroc(a, b)) and m["ood_accepted_at_95_id"] == ood_accepted_at_id_kept(a, b)


def test_conventions_by_hand():
    # ID: 0..19, OOD: 10..29 (half overlapping). Keeping 95 % of ID (19 of 20) needs threshold 18: OOD ≤ 18 are 9 of 20.
    sid, sood = np.arange(20.0), np.arange(10.0, 30.0)
    assert ood_accepted_at_id_kept(sid, sood) == pytest.approx(9 / 20)
    # catching 95 % of OOD (19 of 20) needs threshold 11: ID ≥ 11 are 9 of 20.
    assert id_rejected_at_ood_caught(sid, sood) == pytest.approx(9 / 20)
    # AUROC: P(OOD > ID) + ½ P(tie) = (sum over OOD of #ID below + ½ #ID equal) / 400
    pairs = [(o > i) + 0.5 * (o == i) for o in sood for i in sid]
    assert auroc(sid, sood) == pytest.approx(np.mean(pairs))


def test_torch_and_positive_argument():
    a, b = torch.randn(100), torch.randn(80) + 1
    assert auroc(a, b) == pytest.approx(roc_auc_score(np.r_[np.zeros(100), np.ones(80)], torch.cat([a, b]).numpy()))
    assert fpr_at_tpr(a, b, 0.95, positive="id") == ood_accepted_at_id_kept(a, b)
    with pytest.raises(OODLensError, match="positive"):
        fpr_at_tpr(a, b, positive="ID?")


def test_bad_inputs():
    with pytest.raises(OODLensError, match="non-finite"):
        auroc([0.0, np.nan], [1.0])
    with pytest.raises(OODLensError, match="empty"):
        auroc([], [1.0])
    with pytest.raises(OODLensError, match="1-D"):
        auroc(np.zeros((3, 2)), [1.0])
    with pytest.raises(OODLensError, match="level"):
        fpr_at_tpr([0.0], [1.0], level=1.5)
    assert accuracy(torch.tensor([[0.1, 0.9], [2.0, 1.0]]), torch.tensor([1, 1])) == 0.5
