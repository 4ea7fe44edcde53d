"""Protocol and runner on synthetic features with a known answer; tuning sees validation data only; config CLI."""

import json
import re

import numpy as np
import pytest
import torch

from oodlens import Features
from oodlens.bench import Benchmark, TestSet, render_markdown, run_benchmark, summary
from oodlens.bench.tuning import grid_candidates
from oodlens.cli import main
from oodlens.detectors import Detector, create
from oodlens.errors import OODLensError


class SignedFeature(Detector):
    """score = sign · x[:, 0]; the grid offers both signs. Not registered (no ``name``)."""

    param_grid = {"sign": [1.0, -1.0]}
    score_only_params = frozenset({"sign"})
    fits = 0

    def __init__(self, sign: float = 1.0):
        self.sign = sign

    def required_features(self):
        return ("features",)

    def _fit(self, train, labels, head, model):
        SignedFeature.fits += 1

    def _score(self, x):
        return self.sign * x["features"][:, 0]


def _gauss(n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    return Features(features=torch.randn(n, 4, generator=g) + torch.tensor([shift, 0, 0, 0]))


def _bench(**kw):
    # validation OOD lies at +3 (so sign=+1 is right on validation); the test OOD lies at -3 (sign=-1 would win there)
    return Benchmark("synthetic", _gauss(200, 0, 0), None, _gauss(100, 0, 1), None, _gauss(100, 0, 2), None,
                     [TestSet("far-neg", _gauss(100, -3, 3), "far"), TestSet("near-pos", _gauss(100, 1, 4), "near"),
                      TestSet("cov", _gauss(100, 0.5, 5), "covariate", group="shift", severity=1)],
                     val_ood=_gauss(100, 3, 6), **kw)


def test_tuning_uses_validation_only():
    SignedFeature.fits = 0
    res = run_benchmark(_bench(), [SignedFeature()], progress=False)
    assert res.params["SignedFeature"]["sign"] == 1.0 and res.tuned["SignedFeature"]
    auroc = res.metric("auroc").loc["SignedFeature"]
    assert auroc["far-neg"] < 0.05  # the choice made on validation is wrong for this test set, and that shows
    assert auroc["near-pos"] > 0.7
    assert SignedFeature.fits == 2  # one fit for the score-only grid, one final fit


def test_table_shape_means_and_markdown():
    res = run_benchmark(_bench(), [SignedFeature(), create("msp", logits="features")], progress=False)
    assert set(res.table.columns) == {"detector", "test_set", "kind", "group", "severity", "metric", "value"}
    s = summary(res, "auroc")
    assert list(s.columns) == ["near-pos", "far-neg"]  # a mean column only where a kind has two or more sets
    s = summary(res, "auroc", overall=True)
    assert s.loc["SignedFeature", "mean"] == pytest.approx(res.metric("auroc").loc["SignedFeature", ["near-pos", "far-neg"]].mean())
    md = render_markdown(res)
    assert "FPR95 ↓ (OOD accepted while 95% ID kept)" in md and re.search(r"\| SignedFeature +\|", md) and "Covariate" in md


def test_full_spectrum_accepts_covariate_shift():
    sep = run_benchmark(_bench(), [SignedFeature()], progress=False)
    acc = run_benchmark(_bench(covariate_mode="accept"), [SignedFeature()], progress=False)
    assert "flagged_at_95_id" in set(acc.table[acc.table.test_set == "cov"].metric)
    # with shifted ID counted as ID, separating near-pos (shift 1) from ID ∪ cov (shift 0.5) is harder
    assert acc.metric("auroc").loc["SignedFeature", "near-pos"] < sep.metric("auroc").loc["SignedFeature", "near-pos"]


def test_no_validation_ood_keeps_defaults_and_skips_unmet_detectors():
    b = _bench()
    b.val_ood = None
    res = run_benchmark(b, [SignedFeature(sign=-1.0), create("mahalanobis")], progress=False)
    assert res.params["SignedFeature"]["sign"] == -1.0 and not res.tuned["SignedFeature"]
    assert "mahalanobis" in res.skipped and "labels" in res.skipped["mahalanobis"]
    assert any("not tuned" in n for n in res.notes)


def test_protocol_errors():
    with pytest.raises(OODLensError, match="kind"):
        TestSet("x", _gauss(3, 0, 0), "medium")
    with pytest.raises(OODLensError, match="unique"):
        Benchmark("b", _gauss(5, 0, 0), None, _gauss(5, 0, 0), None, _gauss(5, 0, 0), None,
                  [TestSet("a", _gauss(3, 0, 0), "far"), TestSet("a", _gauss(3, 0, 0), "far")])
    with pytest.raises(OODLensError, match="lacks features"):
        Benchmark("b", _gauss(5, 0, 0).merge({"logits": torch.zeros(5, 2)}), None, _gauss(5, 0, 0), None,
                  _gauss(5, 0, 0), None, [TestSet("a", _gauss(3, 0, 0), "far")])


def test_grid_candidates_default_first_and_capped():
    det = SignedFeature(sign=-1.0)
    assert grid_candidates(det) == [{"sign": -1.0}, {"sign": 1.0}]
    big = type("Big", (SignedFeature,), {"param_grid": {"sign": list(range(100))}})()
    assert len(grid_candidates(big, max_candidates=10)) == 10


def _write_config(tmp_path, fmt="json"):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 6, generator=g) * 4
    def split(n, seed, ood=False):
        gg = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 3, (n,), generator=gg)
        z = centers[y] + torch.randn(n, 6, generator=gg) + (8.0 if ood else 0.0)
        return Features(features=z, logits=z @ centers.T / 4, labels=y)
    for name, seed, ood in [("train", 1, False), ("val", 2, False), ("test", 3, False), ("ood", 4, True), ("vood", 5, True)]:
        split(150, seed, ood).save(tmp_path / f"{name}.safetensors")
    cfg = {"name": "cfg-bench", "detectors": ["msp", "mahalanobis"],
           "train": {"features": "train.safetensors", "labels": "labels"},
           "val": {"features": "val.safetensors", "labels": "labels"},
           "test": {"features": "test.safetensors", "labels": "labels"},
           "val_ood": {"features": "vood.safetensors"},
           "test_sets": [{"name": "shifted", "kind": "far", "features": "ood.safetensors"}]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(cfg))
    return path


def test_bench_command_from_config(tmp_path, capsys):
    path = _write_config(tmp_path)
    assert main(["bench", str(path), "--no-progress", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "cfg-bench" in out and re.search(r"\| mahalanobis +\|", out) and "ID test accuracy" in out
    assert (tmp_path / "out" / "results.csv").is_file() and (tmp_path / "out" / "report.html").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("oodlens: error: config file not found")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": "x.safetensors", "val": "x", "test": "x", "test_sets": [], "colour": 1}))
    assert main(["bench", str(bad)]) == 2
    assert "unknown config field(s) ['colour']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0


def test_bench_command_from_toml(tmp_path, capsys):
    _write_config(tmp_path)  # writes the feature files
    (tmp_path / "bench.toml").write_text('''
name = "toml-bench"
detectors = ["energy", "knn"]
covariate_mode = "separate"

[train]
features = "train.safetensors"
labels = "labels"
[val]
features = "val.safetensors"
labels = "labels"
[test]
features = "test.safetensors"
labels = "labels"

[[test_sets]]
name = "shifted"
kind = "far"
features = "ood.safetensors"

[detector_params.knn]
k = 5
''')
    assert main(["bench", str(tmp_path / "bench.toml"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "toml-bench" in out and re.search(r"\| knn +\|", out) and "not tuned" in out
