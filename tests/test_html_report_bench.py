"""The benchmark report's content: ranking, one number format, mean columns only over two or more sets,
below-chance rows read out, FPR convention and settings stated, Markdown and HTML with the same sections."""

import re

import numpy as np
import pytest
import torch

from oodlens import Features
from oodlens.bench import Benchmark, TestSet, run_benchmark
from oodlens.bench.report import below_chance, build_report, ranking, render_markdown, summary, write_reports


def _features(n, shift, seed, centers):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, centers.shape[0], (n,), generator=g)
    z = centers[y] + torch.randn(n, centers.shape[1], generator=g) + shift
    return Features(features=z, logits=z @ centers.T / 3), y


def small_result(detectors=("msp", "energy", "mahalanobis", "knn")):
    """A small benchmark with near, far (one scored below chance by the logit scores) and graded covariate sets."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 8, generator=g) * 3
    tr, ytr = _features(300, 0.0, 1, centers)
    va, yva = _features(150, 0.0, 2, centers)
    te, yte = _features(150, 0.0, 3, centers)
    vood, _ = _features(100, 4.0, 4, centers)
    sets = [TestSet("near", _features(120, 1.5, 5, centers)[0], "near"),
            TestSet("far", _features(120, 6.0, 6, centers)[0], "far"),
            TestSet("zeros", Features(features=torch.zeros(80, 8), logits=10 * torch.eye(4)[torch.arange(80) % 4]),
                    "far")]
    for sev in (1, 2, 3):
        f, y = _features(100, 0.7 * sev, 10 + sev, centers)
        sets.append(TestSet(f"drift-{sev}", f, "covariate", y, "drift", sev))
    bench = Benchmark("report check", tr, ytr, va, yva, te, yte, sets, val_ood=vood)
    return run_benchmark(bench, list(detectors), progress=False)


@pytest.fixture(scope="module")
def result():
    return small_result()


def test_ranking_and_mean_columns(result):
    auroc = result.metric("auroc")
    by_hand = auroc[["near", "far", "zeros"]].mean(axis=1).sort_values(ascending=False)
    assert list(ranking(result).index) == list(by_hand.index)
    fpr_rank = ranking(result, "ood_accepted_at_95_id")
    assert fpr_rank.is_monotonic_increasing  # lower FPR first
    s = summary(result, "auroc", overall=True)
    assert list(s.columns) == ["near", "far", "zeros", "far mean", "mean"]  # one near set: no "near mean"
    assert s["mean"].to_dict() == pytest.approx(by_hand.to_dict())


def test_markdown_tables_ranked_marked_and_read_out(result):
    md = render_markdown(result, settings={"seed": 7})
    table = md.split("**AUROC ↑**", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines()[2:]]
    order = [r.split("|")[1].strip() for r in rows]
    assert order == list(ranking(result).index)
    auroc = result.metric("auroc")
    best_near = auroc["near"].max()
    assert f"**{100 * best_near:.1f}**" in rows[order.index(auroc["near"].idxmax())]
    for cell in re.findall(r"\|\s*\**(-?\d+\.\d+)\**\s*(?:†)?\s*(?=\|)", table):
        assert re.fullmatch(r"-?\d+\.\d", cell)  # one decimal everywhere
    low = below_chance(result)
    assert low and all(v < 0.5 for d in low.values() for v in d.values())
    for name, dets in low.items():
        for d, v in dets.items():
            assert f"{d} {100 * v:.1f}" in md
            assert f"{100 * v:.1f} †" in md
    assert "more in-distribution than real ID data" in md
    assert "OOD accepted while 95% ID kept" in md and "FPR95 = share of OOD inputs accepted" in md
    assert "- seed: 7" in md and "versions: oodlens" in md and "torch" in md


def test_html_and_markdown_hold_the_same_sections(result, tmp_path):
    rep = build_report(result, calibration=True, plot_detectors=["mahalanobis", "msp"])
    md, page = rep.to_markdown(level=2), rep.to_html()
    for name in rep.section_names:
        assert f"### {name}" in md and f">{name}</h2>" in page
    assert {"Overview", "Main results", "Covariate shift", "Calibration, screening and failure prediction",
            "Run settings"} <= set(rep.section_names)
    assert page.count("<img") >= 6 and "class='best'" in page and "class='flag'" in page
    paths = write_reports(result, tmp_path, report=rep)
    assert [p.name for p in paths] == ["report.md", "report.html", "results.csv"]
    assert paths[0].read_text() == md


def test_report_when_no_detector_ran():
    g = torch.Generator().manual_seed(0)
    f = lambda n: Features(features=torch.randn(n, 4, generator=g))  # noqa: E731
    b = Benchmark("none", f(30), None, f(10), None, f(10), None, [TestSet("far", f(10), "far")])
    r = run_benchmark(b, ["mahalanobis"], progress=False)  # needs labels: skipped
    md = render_markdown(r)
    assert "No detector ran" in md and "Skipped mahalanobis" in md
    assert np.isfinite(len(build_report(r).to_html()))


def test_headline_names_the_best_detectors(result):
    from oodlens.bench.report import headline

    auroc = result.metric("auroc")[["near", "far", "zeros"]].mean(axis=1)
    fpr = result.metric("ood_accepted_at_95_id")[["near", "far", "zeros"]].mean(axis=1)
    text = headline(result)
    assert f"best mean AUROC: **{auroc.idxmax()}** ({100 * auroc.max():.1f})" in text
    assert f"best mean FPR95: **{fpr.idxmin()}** ({100 * fpr.min():.1f})" in text
    md = render_markdown(result)
    assert "| ID test " in md and "| ID " in md  # the ID row of the test-set table, with its size


def test_full_spectrum_report():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 8, generator=g) * 3
    (tr, ytr), (va, yva), (te, yte) = (_features(200, 0.0, s, centers) for s in (1, 2, 3))
    sets = [TestSet("far", _features(100, 6.0, 6, centers)[0], "far")]
    for sev in (1, 2):
        f, y = _features(80, 0.7 * sev, 10 + sev, centers)
        sets.append(TestSet(f"drift-{sev}", f, "covariate", y, "drift", sev))
    r = run_benchmark(Benchmark("fs", tr, ytr, va, yva, te, yte, sets, covariate_mode="accept"), ["msp"], progress=False)
    rep = build_report(r, plot_detectors=["msp"])
    md = rep.to_markdown()
    flagged = r.metric("flagged_at_95_id").loc["msp"]
    assert "full-spectrum" in md and f"{100 * flagged['drift-2']:.1f}" in md
    assert "shifted ID flagged" in rep.to_html()  # the severity plot in full-spectrum terms
