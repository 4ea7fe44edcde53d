"""Multi-layer Mahalanobis against a naive numpy implementation (pinv precision, loops over classes)."""

import inspect

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegressionCV

from oodlens.detectors import create
from oodlens.errors import OODLensError


def _problem(seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    centres_a = torch.randn(classes, 4, generator=g) * 3
    centres_b = torch.randn(classes, 6, generator=g) * 3

    def split(n, shift):
        y = torch.arange(n) % classes
        a = centres_a[y] + torch.randn(n, 4, generator=g) + shift
        b = centres_b[y][:, :, None, None] + torch.randn(n, 6, 2, 2, generator=g) + shift
        return {"a": a, "b": b}, y

    return split(60, 0.0), split(40, 0.0), split(40, 2.5), split(20, 0.0), split(20, 2.5)


def _naive_layer_scores(train, y, feats):
    cols = []
    for name in ("a", "b"):
        tr = train[name].reshape(len(y), train[name].shape[1], -1).mean(2)
        te = feats[name].reshape(feats[name].shape[0], feats[name].shape[1], -1).mean(2)
        means = {c: tr[y == c].mean(0) for c in np.unique(y)}
        cov = sum(np.outer(tr[i] - means[y[i]], tr[i] - means[y[i]]) for i in range(len(y))) / len(y)
        prec = np.linalg.pinv(cov)
        cols.append([max(-0.5 * (z - m) @ prec @ (z - m) for m in means.values()) for z in te])
    return np.array(cols).T


def _np(feats):
    return {k: v.double().numpy() for k, v in feats.items()}


def test_logistic_combination_matches_naive():
    (train, y), (val_id, _), (val_ood, _), (test_id, _), (test_ood, _) = _problem()
    det = create("multi_mahalanobis", layers=["a", "b"]).fit(train, y).fit_validation(val_id, None, val_ood)
    assert det.combination_ == "logistic"
    tr, yy = _np(train), y.numpy()
    x = np.concatenate([_naive_layer_scores(tr, yy, _np(val_ood)), _naive_layer_scores(tr, yy, _np(val_id))])
    t = np.concatenate([np.ones(40), np.zeros(40)])
    new_api = "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters
    kwargs = {"l1_ratios": (0.0,), "scoring": "accuracy", "use_legacy_attributes": False} if new_api else {}
    lr = LogisticRegressionCV(Cs=10, cv=5, solver="newton-cholesky", tol=1e-10, **kwargs).fit(x, t)
    for feats in (test_id, test_ood):
        naive = _naive_layer_scores(tr, yy, _np(feats))
        np.testing.assert_allclose(det._layer_scores(feats).numpy(), naive, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(det.score(feats).numpy(), lr.decision_function(naive), rtol=1e-3, atol=1e-3)
    assert det.score(test_ood).mean() > det.score(test_id).mean()


def test_equal_weight_fallback_matches_naive():
    (train, y), (val_id, _), _, (test_id, _), (test_ood, _) = _problem(1)
    tr, yy = _np(train), y.numpy()
    for val in (None, val_id):
        det = create("multi_mahalanobis", layers=["a", "b"]).fit(train, y)
        ref = train if val is None else val
        if val is not None:
            det.fit_validation(val_id)  # ID only: no OOD validation data
        assert det.combination_ == "standardised-mean"
        s_ref = _naive_layer_scores(tr, yy, _np(ref))
        m, sd = s_ref.mean(0), s_ref.std(0, ddof=1)
        naive = _naive_layer_scores(tr, yy, _np(test_ood))
        want = ((m - naive) / sd).mean(1)
        np.testing.assert_allclose(det.score(test_ood).numpy(), want, rtol=1e-4, atol=1e-4)


def test_singular_covariance_one_sample_class_float16_and_errors():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(30, 8, generator=g)
    a[:, 4:] = a[:, :4]  # rank-deficient covariance
    y = torch.cat([torch.zeros(29, dtype=torch.long), torch.ones(1, dtype=torch.long)])  # one sample in class 1
    feats = {"a": a, "b": torch.randn(30, 3, 2, 2, generator=g)}
    det = create("multi_mahalanobis", layers=["a", "b"]).fit(feats, y)
    assert torch.isfinite(det.score(feats)).all()
    s16 = create("multi_mahalanobis", layers=["a", "b"]).fit({k: v.half() for k, v in feats.items()}, y)
    assert torch.isfinite(s16.score({k: v.half() for k, v in feats.items()})).all()
    with pytest.raises(OODLensError, match="labels"):
        create("multi_mahalanobis", layers=["a"]).fit(feats)
    with pytest.raises(OODLensError, match="repeated"):
        create("multi_mahalanobis", layers=["a", "a"]).fit(feats, y)
    # tiny validation sets: fewer than 2 OOD samples falls back to a plain logistic regression
    det.fit_validation({k: v[:5] for k, v in feats.items()}, None, {k: v[5:6] + 3 for k, v in feats.items()})
    assert det.combination_ == "logistic" and torch.isfinite(det.score(feats)).all()
