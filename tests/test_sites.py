"""The simulated multi-site study (acquisition models), the benchmark runner's per-group false-alarm rows at the
calibrated threshold, and the ``sites`` demo end to end on a small configuration."""

import math
import types

import numpy as np
import pytest
import torch

from oodlens.bench.datasets.sites import SITES, Site, load_sites_study, model_input
from oodlens.bench.group_rates import group_far_table
from oodlens.errors import OODLensError
from oodlens.bench.protocol import Benchmark, TestSet
from oodlens.bench.runner import run_benchmark


def test_acquisition_model_matches_its_formula_for_fixed_parameters():
    site = Site("X", gamma=(2.0, 2.0), gain=(0.5, 0.5), blur=(1e-4, 1e-4), noise=(0.0, 0.0), low_res=0.0)
    digits = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = site.acquire(digits, np.random.default_rng(0))
    u = torch.nn.functional.interpolate(digits, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    assert out.shape == (3, 1, 16, 16)
    assert torch.allclose(out, (0.5 * u**2).clamp(0, 1), atol=1e-4)  # σ → 0: no blur, no noise


def test_study_splits_patients_between_sites():
    study = load_sites_study(0)
    assert set(study.images) == {(s, k) for s in "AB" for k in ("train", "held", "ood")} | {("C", "held"), ("C", "ood")}
    assert all(int(y.max()) <= 5 for (s, k), y in study.labels.items() if k != "ood")
    assert all(int(y.min()) >= 6 for (s, k), y in study.labels.items() if k == "ood")
    # site C is darker and noisier than A (its acquisition model), and models see 8×8 inputs
    assert float(study.images[("C", "held")].mean()) < float(study.images[("A", "held")].mean())
    assert model_input(study.images[("A", "train")]).shape[-2:] == (8, 8)
    assert SITES["C"].low_res > SITES["A"].low_res


def test_runner_reports_false_alarms_at_the_calibrated_threshold_per_group():
    g = torch.Generator().manual_seed(0)
    feats = lambda x: {"features": x}  # noqa: E731
    train, val, test = (torch.randn(n, 4, generator=g) for n in (200, 99, 100))
    site_a = [torch.randn(50, 4, generator=g) for _ in range(2)]
    site_b = [torch.randn(50, 4, generator=g) * 2.0 for _ in range(2)]
    sets = [TestSet(f"A{i}", feats(x), "covariate", group="A") for i, x in enumerate(site_a)] + \
        [TestSet(f"B{i}", feats(x), "covariate", group="B") for i, x in enumerate(site_b)] + \
        [TestSet("far", feats(torch.randn(50, 4, generator=g) + 5), "far")]
    bench = Benchmark("groups", feats(train), None, feats(val), None, feats(test), None, sets)
    res = run_benchmark(bench, ["mahalanobis_one_class"], progress=False)
    det = res.scores["mahalanobis_one_class"]
    tau = np.sort(det["val"])[math.ceil(100 * 0.95) - 1]  # k = ⌈(n + 1)·0.95⌉ = 95 of n = 99
    wide = group_far_table(res)
    assert list(wide.columns) == ["test", "group:A", "group:B"]
    assert wide.loc["mahalanobis_one_class", "test"] == pytest.approx(np.mean(det["test"] > tau))
    want_b = np.mean(np.concatenate([det["B0"], det["B1"]]) > tau)
    assert wide.loc["mahalanobis_one_class", "group:B"] == pytest.approx(want_b)
    assert want_b > 0.5  # the scanner with twice the spread drowns in alarms
    far = res.table[(res.table.metric == "flagged_at_calibrated_95") & (res.table.test_set == "far")].value
    assert float(far.iloc[0]) == pytest.approx(np.mean(det["far"] > tau))
    with pytest.raises(OODLensError, match="no 'far_at_calibrated_90' rows"):  # was: an all-NaN table
        group_far_table(res, level=0.9)
    with pytest.raises(OODLensError, match="BenchmarkResult"):  # was: AttributeError
        group_far_table(None)


def test_demo_runs_small(tmp_path, monkeypatch, capsys):
    import oodlens.bench.demos.sites as demo

    monkeypatch.setattr(demo, "REPS", 2)
    args = types.SimpleNamespace(seed=0, detectors="knn,ssd", out=str(tmp_path), no_progress=True, cache=None,
                                 threads=1)
    assert demo.run_demo(args) == 0
    out = capsys.readouterr().out
    assert "Per site: false alarms and detection (knn)" in out and "C (new)" in out and "unseen group 'C'" in out
    assert "only 180 unlabelled images from it" in out  # was "a few hundred" (the split has 180)
    assert (tmp_path / "sites.md").is_file() and (tmp_path / "sites.html").is_file()
    assert (tmp_path / "sites_summary.csv").read_text().count("\n") == 1 + 3 * 2 * 3  # sites × detectors × methods


def test_settings_name_what_the_time_covers():
    import inspect

    from oodlens.bench.demos import sites

    src = inspect.getsource(sites)
    assert '"train (s)"' not in src and "model, features, detectors (s)" in src  # the time is not training alone


def test_zero_shot_rows_say_they_use_the_head_as_prompts():
    import pandas as pd

    from oodlens.bench.demos._sites_report import detector_table

    rows = [{"detector": "mcm", "site": s, "method": m, "far": 0.05, "far_se": 0.01, "detection": 0.5,
             "detection_se": 0.02} for s in ("A", "B", "C") for m in ("marginal", "weighted")]
    aurocs = pd.DataFrame([{"detector": "mcm", "site": s, "auroc": 0.9} for s in ("A", "B", "C")])
    table = detector_table(pd.DataFrame(rows), aurocs)
    assert set(table["needs"]) == {"head rows as prompts"}  # was 'features only': MCM read the head's weights
