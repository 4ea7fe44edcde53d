"""Gram-matrix deviations against a naive numpy implementation (full Gram matrices, loops over samples)."""

import numpy as np
import pytest
import torch

from oodlens.detectors import create
from oodlens.detectors.gram import gram_features
from oodlens.errors import OODLensError
from oodlens.features import Features

POWERS = [1, 2, 3, 5]


def _problem(seed=0, n=40, classes=3, negative=False):
    g = torch.Generator().manual_seed(seed)

    def split(m, shift):
        a = torch.randn(m, 4, 3, 3, generator=g) + shift
        b = torch.randn(m, 5, generator=g) + shift
        a = a if negative else a.abs()
        b = b if negative else b.abs()
        logits = torch.randn(m, classes, generator=g) * 2
        return {"a": a, "b": b, "logits": logits}

    train, val, test = split(n, 0.0), split(20, 0.0), split(15, 0.7)
    train["logits"][:, classes - 1] = -50.0  # the last class is never predicted on training data
    return train, val, test


def _naive_gram(m, p):
    f = m.reshape(m.shape[0], -1) ** p
    rows = (f @ f.T).sum(1)
    return np.sign(rows) * np.abs(rows) ** (1.0 / p)


def _naive_values(feats, i):
    vals = []
    for name in ("a", "b"):
        m = feats[name][i]
        m = m if m.ndim > 1 else m[:, None]
        vals.append([_naive_gram(m, p) for p in POWERS])
    return vals  # [layer][power] -> (C,)


def _naive_fit(train, classes):
    n = train["a"].shape[0]
    preds = train["logits"].argmax(1)
    mins, maxs = {}, {}
    all_vals = [_naive_values(train, i) for i in range(n)]
    for c in list(range(classes)) + ["all"]:
        idx = [i for i in range(n) if c == "all" or preds[i] == c]
        if not idx:
            continue
        mins[c] = [[np.min([all_vals[i][l][p] for i in idx], 0) for p in range(len(POWERS))] for l in range(2)]
        maxs[c] = [[np.max([all_vals[i][l][p] for i in idx], 0) for p in range(len(POWERS))] for l in range(2)]
    return mins, maxs


def _naive_deviations(feats, mins, maxs):
    out = []
    for i in range(feats["a"].shape[0]):
        logits = feats["logits"][i]
        prob = np.exp(logits - logits.max())
        prob /= prob.sum()
        c = int(np.argmax(logits))
        c = c if c in mins else "all"
        vals = _naive_values(feats, i)
        row = []
        for l in range(2):
            dev = 0.0
            for p in range(len(POWERS)):
                lo, hi, g = mins[c][l][p], maxs[c][l][p], vals[l][p]
                dev += (np.maximum(lo - g, 0) / np.abs(lo + 1e-6)).sum()
                dev += (np.maximum(g - hi, 0) / np.abs(hi + 1e-6)).sum()
            row.append(dev / prob.max())
        out.append(row)
    return np.array(out)


def _np(feats):
    return {k: v.double().numpy() for k, v in feats.items()}


@pytest.mark.parametrize("negative", [False, True])
def test_matches_naive(negative):
    train, val, test = _problem(negative=negative)
    det = create("gram", layers=["a", "b"], powers=POWERS).fit(train)
    assert det.unpredicted_classes_ == [2]
    mins, maxs = _naive_fit(_np(train), 3)
    raw = _naive_deviations(_np(test), mins, maxs).sum(1)
    np.testing.assert_allclose(det.score(test).numpy(), raw, rtol=1e-5, atol=1e-6)
    det.fit_validation(val)
    norm = _naive_deviations(_np(val), mins, maxs).mean(0) + 1e-7
    want = (_naive_deviations(_np(test), mins, maxs) / norm).sum(1)
    np.testing.assert_allclose(det.score(test).numpy(), want, rtol=1e-5, atol=1e-6)
    assert (det.score(train).abs() < 1e-6).all()  # training samples lie inside their class ranges


def test_gram_rows_scale_invariance_and_huge_norms():
    m = torch.randn(3, 4, 2, 5, dtype=torch.float64)
    g = gram_features(m, [1, 2, 7])
    for i in range(3):
        want = np.concatenate([_naive_gram(m[i].numpy(), p) for p in (1, 2, 7)])
        np.testing.assert_allclose(g[i].numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(gram_features(m * 1e30, [10]).numpy(), gram_features(m, [10]).numpy() * 1e60,
                               rtol=1e-10)
    train, val, test = _problem(1)
    det = create("gram", layers=["a", "b"]).fit({k: v * 1e20 if k != "logits" else v for k, v in train.items()})
    assert torch.isfinite(det.score({k: v * 1e20 if k != "logits" else v for k, v in test.items()})).all()


def test_float16_and_errors():
    train, val, test = _problem(2)
    s = create("gram", layers=["a", "b"], powers=POWERS).fit(train).score(test)
    half = {k: v.half() for k, v in train.items()}
    s16 = create("gram", layers=["a", "b"], powers=POWERS).fit(half).score({k: v.half() for k, v in test.items()})
    assert torch.isfinite(s16).all() and np.corrcoef(s.numpy(), s16.numpy())[0, 1] > 0.9
    with pytest.raises(OODLensError, match="powers"):
        create("gram", layers=["a"], powers=[0, 1]).fit(train)
    with pytest.raises(OODLensError, match="layer"):
        create("gram", layers=[]).fit(train)


def test_chunking_does_not_change_scores(monkeypatch):
    import oodlens.detectors.gram as gram_module

    train, val, test = _problem(4)
    whole = create("gram", layers=["a", "b"], powers=POWERS).fit(train).fit_validation(val)
    monkeypatch.setattr(gram_module, "_CHUNK_ELEMENTS", 300)  # a few rows per chunk
    chunked = create("gram", layers=["a", "b"], powers=POWERS).fit(train).fit_validation(val)
    assert chunked._chunk_rows(Features(test)) < 5
    assert torch.allclose(whole.mins_, chunked.mins_, rtol=1e-12)
    assert torch.allclose(whole.maxs_, chunked.maxs_, rtol=1e-12)
    np.testing.assert_allclose(chunked.score(test).numpy(), whole.score(test).numpy(), rtol=1e-12)
