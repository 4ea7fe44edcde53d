"""Plots: each function returns a Figure whose drawn data equal an independent computation."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from oodlens.bench.html import figure_bytes
from oodlens.errors import OODLensError
from oodlens.plots import (auroc_vs_severity, boxes_with_scores, modality_attribution, pvalue_calibration,
                           risk_coverage, roc_curves, score_histograms, score_map)


def _lines(fig, label_start):
    return [ln for ax in fig.axes for ln in ax.get_lines() if str(ln.get_label()).startswith(label_start)]


def _naive_roc(s_id, s_ood):
    thresholds = np.r_[np.inf, np.sort(np.unique(np.r_[s_id, s_ood]))[::-1]]
    fpr = np.array([(s_id >= t).mean() for t in thresholds])
    tpr = np.array([(s_ood >= t).mean() for t in thresholds])
    return fpr, tpr


def test_roc_curves_points_and_auroc_label():
    g = np.random.default_rng(0)
    s_id, s_ood = g.normal(0, 1, 60), g.normal(1, 1, 40)
    fig = roc_curves(torch.tensor(s_id), {"far": s_ood}, title="t")
    assert isinstance(fig, Figure)
    (line,) = _lines(fig, "far")
    fpr, tpr = _naive_roc(s_id, s_ood)
    np.testing.assert_allclose(line.get_xdata(), 100 * fpr)
    np.testing.assert_allclose(line.get_ydata(), 100 * tpr)
    naive_auc = np.mean([(o > i) + 0.5 * (o == i) for o in s_ood for i in s_id])
    assert f"AUROC {100 * naive_auc:.1f}" in line.get_label()
    assert figure_bytes(fig)[:4] == b"\x89PNG"


def test_roc_curves_per_detector_id_scores():
    fig = roc_curves({"a": [0, 1, 2.0], "b": [5, 6, 7.0]}, {"a": [3, 4, 5.0], "b": [0, 1, 2.0]})
    labels = [ln.get_label() for ln in _lines(fig, "")]
    assert "a (AUROC 100.0)" in labels and "b (AUROC 0.0)" in labels


def test_score_histograms_densities():
    s_id = np.arange(100, dtype=float) - 50  # spans zero: linear bins
    fig = score_histograms(s_id, {"x": s_id + 50, "y": s_id[::-1]}, bins=10)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["x", "y"]
    ax = visible[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    lo, hi = np.quantile(np.r_[s_id, s_id + 50, s_id], [0.005, 0.995])
    edges = np.linspace(lo, hi, 11)
    dens, _ = np.histogram(np.clip(s_id, lo, hi), edges, density=True)
    np.testing.assert_allclose([b.get_height() for b in bars[:10]], dens)


def test_auroc_vs_severity_lines():
    data = {"rotate": {"msp": {1: 55.0, 3: 70.0, 5: 90.0}, "knn": {1: 60.0, 3: 80.0}}, "blur": {"msp": {2: 51.0}}}
    fig = auroc_vs_severity(data)
    (msp,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "msp"]
    np.testing.assert_allclose(msp.get_xdata(), [1, 3, 5])
    np.testing.assert_allclose(msp.get_ydata(), [55, 70, 90])
    assert fig.axes[1].get_title() == "blur"
    with pytest.raises(OODLensError):
        auroc_vs_severity({})


def test_risk_coverage_matches_naive():
    g = np.random.default_rng(1)
    n = 50
    correct = g.random(n) > 0.3
    score = np.where(correct, g.normal(0, 1, n), g.normal(1, 1, n))
    fig = risk_coverage({"s": score}, correct)
    (line,) = _lines(fig, "s (AURC")
    order = np.argsort(score)  # accept the least OOD first
    k = np.arange(1, n + 1)
    risk = np.cumsum(~correct[order]) / k
    cov = k / n
    xs, ys = line.get_xdata(), line.get_ydata()
    for c, r in zip(cov, risk):
        j = np.argmin(np.abs(xs - 100 * c))
        assert xs[j] == pytest.approx(100 * c) and ys[j] == pytest.approx(100 * r)
    random_line = _lines(fig, "random")[0]
    assert random_line.get_ydata()[0] == pytest.approx(100 * (1 - correct.mean()))
    with pytest.raises(OODLensError, match="entries"):
        risk_coverage({"s": score[:-1]}, correct)


def test_pvalue_calibration_rates():
    p = np.array([0.01, 0.02, 0.05, 0.05, 0.1, 0.5, 0.9, 1.0])
    fig = pvalue_calibration({"marginal": p}, max_level=0.2)
    (line,) = _lines(fig, "marginal")
    for t_pct, rate_pct in zip(line.get_xdata()[::37], line.get_ydata()[::37]):
        assert rate_pct == pytest.approx(100 * np.mean(p <= t_pct / 100 + 1e-12))
    with pytest.raises(OODLensError, match=r"\[0, 1\]"):
        pvalue_calibration({"bad": [0.5, 1.5]})


def test_modality_attribution_bars():
    shares = {"video fails": {"video": 0.8, "flow": 0.2}, "flow fails": {"video": 0.3, "flow": 0.7}}
    fig = modality_attribution(shares, expected={"video fails": "video", "flow fails": "flow"})
    ax = fig.axes[0]
    widths = sorted(round(p.get_width(), 6) for p in ax.patches)
    assert widths == [20.0, 30.0, 70.0, 80.0]
    texts = [t.get_text() for t in ax.texts]
    assert "80 % → video" in texts and "70 % → flow" in texts
    with pytest.raises(OODLensError):
        modality_attribution({"a": {"x": 1.5}})


def test_boxes_with_scores_colour_and_flag():
    img = np.zeros((40, 60, 3))
    boxes = np.array([[5, 5, 20, 20], [30, 10, 55, 35]], dtype=float)
    fig = boxes_with_scores(img, boxes, [0.1, 0.9], labels=["cat", "?"], threshold=0.5)
    rects = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(rects) == 2
    flagged = [r for r in rects if r.get_linestyle() == "-"]
    assert len(flagged) == 1 and flagged[0].get_xy() == (30.0, 10.0) and flagged[0].get_width() == 25
    assert {t.get_text() for t in fig.axes[0].texts} == {"cat 0.10", "? 0.90"}
    with pytest.raises(OODLensError, match="2 boxes but 1 scores"):
        boxes_with_scores(img, boxes, [0.1])


def test_score_map_overlay_and_checks():
    img = torch.rand(3, 16, 24)
    scores = np.linspace(0, 1, 16 * 24).reshape(16, 24)
    mask = scores > 0.7
    fig = score_map(img, scores, mask=mask, threshold=0.5)
    shown = fig.axes[1].get_images()[-1].get_array()
    np.testing.assert_allclose(np.asarray(shown), scores)
    assert figure_bytes(fig, "svg").lstrip().startswith(b"<?xml")
    with pytest.raises(OODLensError, match="does not match"):
        score_map(img, scores[:, :5])
    with pytest.raises(OODLensError, match="NaN"):
        roc_curves([0.0, np.nan], {"a": [1.0]})


def test_score_histograms_log_bins_for_wide_positive_scores():
    s_id = np.linspace(1, 5, 200)
    fig = score_histograms(s_id, {"far": np.linspace(200, 400, 200)}, bins=8)
    ax = [a for a in fig.axes if a.get_visible()][0]
    assert ax.get_xscale() == "log"
    lo, hi = np.quantile(np.r_[s_id, np.linspace(200, 400, 200)], [0.005, 0.995])
    left = sorted({round(p.get_x(), 9) for p in ax.patches if isinstance(p, Rectangle)})[:8]
    np.testing.assert_allclose(left, np.geomspace(lo, hi, 9)[:8], rtol=1e-6)


def test_bad_inputs_found_by_review():
    a, b = np.linspace(0, 1, 20), np.linspace(0.5, 1.5, 20)
    img = np.random.default_rng(0).uniform(size=(16, 16, 3))
    cases = [
        (lambda: roc_curves(["a", "b"], {"x": b}), "must be numbers"),  # was: ValueError from numpy
        (lambda: score_histograms(a, {"x": b}, bins=0), "bins"),  # was: an empty figure
        (lambda: risk_coverage({"s": a}, np.full(20, 0.5)), "booleans or 0/1"),  # was: 0.5 read as correct
        (lambda: risk_coverage({"s": a}, np.full(20, 2)), "booleans or 0/1"),
        (lambda: modality_attribution({"video": 0.6, "flow": 0.4}), "must be a mapping"),  # was: TypeError
        (lambda: auroc_vs_severity({"blur": {"knn": {1: float("nan"), 2: 70.0}}}), "NaN"),  # was: a gap
        (lambda: auroc_vs_severity({"blur": {}}), "no .detector"),  # was: an empty panel
        (lambda: boxes_with_scores(img, np.array([[10, 10, 2, 2]]), np.array([0.5])), "x2 ≥ x1"),  # x, y, w, h?
        (lambda: boxes_with_scores(img, np.zeros((4, 5)), np.zeros(5)), r"\(N, 4\)"),  # was: reshaped to (5, 4)
        (lambda: score_map(img, np.zeros((16, 16)), cmap="nope"), "colormap"),  # was: ValueError
    ]
    for fn, msg in cases:
        with pytest.raises(OODLensError, match=msg):
            fn()
    assert isinstance(risk_coverage({"s": a}, (a > 0.5).astype(int)), Figure)  # 0/1 integers still accepted


def test_modality_legend_does_not_cover_the_title():
    fig = modality_attribution({"a": {"x": 0.6, "y": 0.4}}, title="Sensor blamed by max-z attribution",
                               expected={"a": "x"})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    title = fig.axes[0].title.get_window_extent(renderer)
    assert not legend.overlaps(title)  # the legend sat on the title (multimodal demo's figure)
