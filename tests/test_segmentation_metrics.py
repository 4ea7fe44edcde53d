"""Streamed pooled pixel metrics: equal to the exact sort-based metric (≤ 1e-4 on 10⁷ pixels), AP as a step sum,
FPR at 95 % TPR, per-image variants, and the bad inputs of the issue (shape, NaN, empty ROI, no anomaly)."""

import numpy as np
import pytest
import torch

from oodlens.errors import OODLensError
from oodlens.segmentation import (StreamingPixelMetrics, anomaly_labels, evaluate, exact_pixel_metrics,
                                  per_image_metrics)


def _naive(scores, pos):
    """AUROC by pair counting (ties ½), AP = Σ ΔR·P over distinct thresholds, FPR at the first TPR ≥ 0.95."""
    sp, sn = scores[pos], scores[~pos]
    auroc = ((sp[:, None] > sn[None, :]).sum() + 0.5 * (sp[:, None] == sn[None, :]).sum()) / (sp.size * sn.size)
    ap, prev_r, fpr = 0.0, 0.0, None
    for t in np.unique(scores)[::-1]:
        tp, fp = (sp >= t).sum(), (sn >= t).sum()
        r = tp / sp.size
        ap += (r - prev_r) * tp / (tp + fp)
        prev_r = r
        if fpr is None and r >= 0.95:
            fpr = fp / sn.size
    return auroc, ap, fpr


def test_small_against_naive_formulas_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 12, (3, 9, 11)).astype(np.float32) / 4  # many ties
    lab = (rng.random((3, 9, 11)) < 0.3).astype(np.uint8)
    lab[0, 0, :4] = 255
    m = StreamingPixelMetrics(threads=2).update(s, lab).compute()
    keep = lab != 255
    a, ap, fpr = _naive(s[keep], lab[keep] == 1)
    assert m["auroc"] == pytest.approx(a, abs=1e-12)
    assert m["ap"] == pytest.approx(ap, abs=1e-12)
    assert m["fpr95"] == pytest.approx(fpr, abs=1e-12)
    assert m["auroc_tie_bound"] > 0  # counts exact ties too: a bound, not the error (here 0)
    assert exact_pixel_metrics(s, lab)["ap"] == pytest.approx(ap, abs=1e-12)


def test_ten_million_pixels_within_1e4_of_exact():
    rng = np.random.default_rng(1)
    n = 10_000_000
    lab = (rng.random(n, dtype=np.float32) < 0.02).astype(np.uint8)
    # scores over many scales: a narrow saturated bulk near −1 (MSP-like) and a wide tail
    s = np.where(rng.random(n, dtype=np.float32) < 0.7, -1 + 1e-3 * rng.random(n, dtype=np.float32),
                 rng.standard_normal(n, dtype=np.float32) * 3).astype(np.float32) + lab * np.float32(0.8)
    shape = (10, 1000, 1000)
    acc = StreamingPixelMetrics()
    for i in range(0, 10):  # ten frames, streamed
        acc.update(s.reshape(shape)[i], lab.reshape(shape)[i])
    got = acc.compute()
    exact = exact_pixel_metrics(s, lab)
    for k in ("auroc", "ap", "fpr95"):
        assert abs(got[k] - exact[k]) <= 1e-4, (k, got[k], exact[k])
    assert got["n_anomaly"] + got["n_normal"] == n and acc.n_frames == 10


def test_roi_ignore_infinite_and_float64():
    rng = np.random.default_rng(2)
    s = rng.standard_normal((2, 20, 20))
    s[0, 0, 0], s[1, 0, 0] = np.inf, -np.inf
    lab = (rng.random((2, 20, 20)) < 0.2).astype(np.uint8)
    roi = np.ones((2, 20, 20), bool)
    roi[:, :5] = False
    got = StreamingPixelMetrics().update(torch.from_numpy(s), torch.from_numpy(lab), roi).compute()
    keep = roi.copy()
    exact = exact_pixel_metrics(s.astype(np.float32)[keep], lab[keep])
    assert got["auroc"] == pytest.approx(exact["auroc"], abs=1e-6)
    assert got["n_anomaly"] + got["n_normal"] == keep.sum()


def test_best_f1_threshold_reproduces_f1():
    rng = np.random.default_rng(3)
    s = rng.standard_normal((4, 30, 30)).astype(np.float32)
    lab = (rng.random((4, 30, 30)) < 0.1).astype(np.uint8)
    s += lab
    m = StreamingPixelMetrics(bits=26).update(s, lab).compute()
    pred = s >= m["threshold"]
    tp, fp, fn = (pred & (lab == 1)).sum(), (pred & (lab == 0)).sum(), (~pred & (lab == 1)).sum()
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_per_image_mean_and_skip():
    rng = np.random.default_rng(4)
    s = rng.standard_normal((3, 10, 10)).astype(np.float32)
    lab = (rng.random((3, 10, 10)) < 0.3).astype(np.uint8)
    lab[2] = 0  # no anomaly: skipped per image, counted pooled
    got = per_image_metrics(s, lab)
    want = np.mean([exact_pixel_metrics(s[i], lab[i])["auroc"] for i in range(2)])
    assert got["auroc"] == pytest.approx(want) and got["n_frames"] == 2 and got["n_skipped"] == 1


def test_bad_inputs_clear_errors():
    s = np.zeros((2, 8, 8), np.float32)
    lab = np.zeros((2, 8, 8), np.uint8)
    lab[:, 0] = 1
    acc = StreamingPixelMetrics()
    with pytest.raises(OODLensError, match="label maps have shape"):
        acc.update(s, lab[:, :4])
    bad = s.copy()
    bad[1, 3, 3] = np.nan
    acc.update(s[0], lab[0])
    before = acc.counts()
    with pytest.raises(OODLensError, match="NaN"):
        acc.update(bad, lab)
    after = acc.counts()  # the failed batch left nothing behind
    assert np.array_equal(before.pos, after.pos) and np.array_equal(before.neg, after.neg)
    with pytest.raises(OODLensError, match="label"):
        StreamingPixelMetrics().update(s, np.full_like(lab, 7))
    with pytest.raises(OODLensError, match="no pixel left"):
        evaluate(s, lab, roi=np.zeros_like(lab))
    with pytest.raises(OODLensError, match="0 anomaly"):
        StreamingPixelMetrics().update(s, np.zeros_like(lab)).compute()
    with pytest.raises(OODLensError, match="bits"):
        StreamingPixelMetrics(bits=40)


def test_anomaly_labels_and_merge():
    sem = torch.tensor([[0, 3, 254], [255, 1, 254]], dtype=torch.uint8)
    assert anomaly_labels(sem).tolist() == [[0, 0, 1], [255, 0, 1]]
    rng = np.random.default_rng(5)
    s = rng.standard_normal((2, 16, 16)).astype(np.float32)
    lab = (rng.random((2, 16, 16)) < 0.3).astype(np.uint8)
    a = StreamingPixelMetrics().update(s[0], lab[0])
    a.merge(StreamingPixelMetrics().update(s[1], lab[1]))
    assert a.compute()["auroc"] == pytest.approx(StreamingPixelMetrics().update(s, lab).compute()["auroc"])
