"""The synthetic multimodal demo in its reduced configuration: it runs, trains above chance, writes its tables."""

import argparse

import pytest
import torch

from oodlens.bench.demos.multimodal_synthetic import DemoConfig, SyntheticConfig, make_synthetic, render, run_benchmark, run_demo


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mm_cache")


@pytest.fixture(scope="module")
def result(cache):
    return run_benchmark(DemoConfig.fast(), seed=0, detectors=["msp", "energy", "mahalanobis"], progress=False,
                         cache=cache)


def test_demo_accuracy_well_above_chance(result):
    acc = result["accuracy"]
    assert list(acc["training"]) == ["baseline", "A2D", "A2D+NP-Mix"]
    assert not acc["cached"].any()
    assert (acc["acc_fused"] > 0.5).all()  # chance is 1/8
    # A2D trains the per-modality heads (single-prediction loss); the baseline leaves them untrained
    a2d = acc.set_index("training").loc["A2D"]
    assert a2d["acc_video"] > 0.2 and a2d["acc_flow"] > 0.2


def test_demo_rows_and_ground_truth(result):
    df = result["results"]
    assert set(df["test_set"]) == {"near-OOD", "far-OOD", "video blanked", "flow blanked", "video noise", "flow noise"}
    assert set(df["kind"]) == {"near", "far", "sensor"}
    far = df[(df.test_set == "far-OOD") & (df.detector == "mahalanobis")]
    assert (far["auroc"] > 0.7).all()  # far-OOD is clearly separable in the embeddings
    mw = result["modality_wise"]
    blank = mw[(mw.test_set == "video blanked") & (mw.detector == "msp")]
    assert blank["attributed"].notna().all()
    text = render(result, 1.0)
    assert "FPR95" in text and "Verdict" in text and "A2D+NP-Mix" in text


def test_synthetic_data_is_seeded():
    small = SyntheticConfig(n_train=5, n_val=2, n_test=3, n_ood=8)
    a, b = make_synthetic(small, 1), make_synthetic(small, 1)
    assert torch.equal(a["inputs"]["near-OOD"]["flow"], b["inputs"]["near-OOD"]["flow"])
    assert torch.equal(a["inputs"]["video blanked"]["video"], torch.zeros_like(a["inputs"]["test"]["video"]))
    assert torch.equal(a["inputs"]["video blanked"]["flow"], a["inputs"]["test"]["flow"])


def test_run_demo_writes_tables(tmp_path, capsys, cache, result):
    args = argparse.Namespace(cache=str(cache), out=str(tmp_path / "out"), seed=0,
                              detectors="msp,energy", no_progress=True, fast=True)
    weights = sorted((cache / "multimodal").glob("*.safetensors"))
    stamps = [w.stat().st_mtime_ns for w in weights]
    assert run_demo(args) == 0
    printed = capsys.readouterr().out
    assert "baseline" in printed and "near-OOD" in printed
    assert (tmp_path / "out" / "multimodal.md").is_file() and (tmp_path / "out" / "multimodal_results.csv").is_file()
    assert len(weights) == 3  # the fixture's trained weights, reused rather than retrained
    assert [w.stat().st_mtime_ns for w in weights] == stamps
