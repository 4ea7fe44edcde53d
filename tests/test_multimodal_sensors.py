"""The real-signal multimodal benchmark: sensor renderings against naive formulas, the test sets' construction,
the report's paired intervals, the demo end to end (reduced), and the Earth-observation readers on fixtures."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from oodlens.bench.datasets import digit_sensors as ds
from oodlens.bench.demos import _multimodal_sensors_report as report
from oodlens.errors import OODLensError
from oodlens.multimodal.eo_readers import read_image_folders, read_so2sat


def test_diagonal_sums_match_traces():
    img = torch.rand(3, 8, 8)
    got = ds.diagonal_sums(img)
    for n in range(3):
        a = img[n].numpy()
        want = [np.trace(a, offset=-k) for k in range(-7, 8)]  # i − j = k, k = −7..7
        assert got[n].tolist() == pytest.approx(want, abs=1e-5)


def test_profile_and_edge_views_without_noise(monkeypatch):
    monkeypatch.setattr(ds, "PROFILE_NOISE", 0.0)
    monkeypatch.setattr(ds, "EDGE_NOISE", 0.0)
    x = torch.rand(2, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    prof = ds.profile_view(x, g)
    a = x[0, 0].numpy()
    anti = np.fliplr(a)
    want = np.concatenate([a.sum(1), a.sum(0), [np.trace(a, -k) for k in range(-7, 8)],
                           [np.trace(anti, -k) for k in range(-7, 8)]]) / 8.0
    assert prof[0].tolist() == pytest.approx(want.tolist(), abs=1e-5)
    edges = ds.edge_view(x, g).reshape(2, 8, 8)
    pad = np.pad(a, 1, mode="edge")
    i, j = 3, 5  # an interior pixel: Sobel by hand
    win = pad[i:i + 3, j:j + 3]
    gx = (win * np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])).sum() / 4
    gy = (win * np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]])).sum() / 4
    assert float(edges[0, i, j]) == pytest.approx(np.hypot(gx, gy), abs=1e-5)


def test_sensor_sets_are_built_as_documented():
    d = ds.load_digit_sensors(0, n_far=50)
    test = d.inputs["test"]
    assert {k for k, v in d.kinds.items() if v == "sensor"} == {
        "camera blanked", "camera noise", "profile blanked", "profile noise", "edges blanked", "edges noise",
        "misregistered"}
    assert d.kinds["camera defocus"] == "covariate" and d.kinds["near-OOD"] == "near"
    assert torch.equal(d.inputs["camera blanked"]["camera"], torch.zeros_like(test["camera"]))
    assert torch.equal(d.inputs["camera blanked"]["profile"], test["profile"])
    mis = d.inputs["misregistered"]
    assert torch.equal(mis["camera"], test["camera"])
    # every misregistered row pairs the camera with another sample's profile (never its own)
    same = (mis["profile"][:, None, :] == test["profile"][None, :, :]).all(2)
    assert bool(same.any(1).all()) and not bool(same.diagonal().any())
    assert set(d.labels["train"].unique().tolist()) == set(range(6))
    assert d.inputs["far-OOD"]["camera"].shape == (50, 64)


def test_sensor_input_shape_is_checked():
    with pytest.raises(OODLensError, match="8, 8"):
        ds.sense(torch.rand(4, 64), torch.Generator())


def test_paired_interval_is_the_t_interval():
    a, b = [0.9, 0.86, 0.88], [0.7, 0.75, 0.71]
    mean, lo, hi = report.paired_interval(a, b)
    d = np.subtract(a, b)
    want = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (lo, hi) == pytest.approx(want) and mean == pytest.approx(d.mean())
    assert "exceeds" in report._verdict(mean, lo, hi)
    assert "within" in report._verdict(*report.paired_interval([0.5, 0.6, 0.4], [0.5, 0.5, 0.5]))


def test_demo_runs_and_reports(tmp_path, capsys):
    from oodlens.bench.demos.multimodal import run_demo

    args = SimpleNamespace(fast=True, cache=str(tmp_path / "cache"), out=str(tmp_path / "out"), seed=0,
                           detectors="energy,mahalanobis", no_progress=True)
    assert run_demo(args) == 0
    text = capsys.readouterr().out
    for section in ("ID test accuracy", "Fused detectors", "Prediction discrepancy", "Detector fusion across",
                    "Verdict"):
        assert section in text
    assert "sensor heads stay at their initialisation" in text  # the baseline's ~chance sensor accuracies explained
    acc = __import__("pandas").read_csv(tmp_path / "out" / "multimodal_accuracy.csv")
    assert (acc["fused"] > 0.5).all()  # 6 classes: chance is 1/6, even the reduced training learns
    fusion = __import__("pandas").read_csv(tmp_path / "out" / "multimodal_fusion.csv")
    assert {"z max", "Fisher p", "min-p", "harmonic p", "logistic (val OOD)", "fused head"} <= set(fusion["fusion"])
    assert run_demo(args) == 0  # second run: weights from the cache


# -- Earth-observation readers ----------------------------------------------------------------------------------
def _so2sat(path, n=5, bad_label=False):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    labels = np.eye(17)[rng.integers(0, 17, n)]
    if bad_label:
        labels[2] = 0
    with h5py.File(path, "w") as f:
        f["sen1"] = rng.normal(size=(n, 32, 32, 8)).astype(np.float64)
        f["sen2"] = rng.random((n, 32, 32, 10)).astype(np.float64)
        f["label"] = labels
    return labels


def test_so2sat_reader_layout(tmp_path):
    path = tmp_path / "validation.h5"
    labels = _so2sat(path)
    x, y, names = read_so2sat(path, block=2)  # several row blocks
    assert x["sen1"].shape == (5, 8, 32, 32) and x["sen2"].shape == (5, 10, 32, 32)
    assert y.tolist() == labels.argmax(1).tolist() and len(names) == 17
    import h5py

    with h5py.File(path) as f:
        assert float(x["sen2"][3, 7, 4, 9]) == pytest.approx(float(f["sen2"][3, 4, 9, 7]))  # (y, x, c) → (c, y, x)
    part, y2, _ = read_so2sat(path, rows=slice(1, 4), modalities=("sen2",))
    assert list(part) == ["sen2"] and torch.equal(part["sen2"], x["sen2"][1:4]) and torch.equal(y2, y[1:4])


def test_so2sat_reader_errors(tmp_path):
    _so2sat(tmp_path / "bad.h5", bad_label=True)
    with pytest.raises(OODLensError, match="row 2 is not one-hot"):
        read_so2sat(tmp_path / "bad.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(OODLensError, match="not a readable HDF5"):
        read_so2sat(tmp_path / "junk.h5")
    with pytest.raises(OODLensError, match="modalities"):
        read_so2sat(tmp_path / "bad.h5", modalities=("sen3",))
    with pytest.raises(OODLensError, match="not found"):
        read_so2sat(tmp_path / "missing.h5")


def test_image_folder_reader(tmp_path):
    from PIL import Image

    for c, colour in (("airport", (255, 0, 0)), ("beach", (0, 0, 255))):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), colour).save(tmp_path / c / f"{i}.png")
    x, y, names = read_image_folders(tmp_path, size=16)
    assert names == ("airport", "beach") and y.tolist() == [0, 0, 1, 1]
    assert x["optical"].shape == (4, 3, 16, 16)
    assert float(x["optical"][0, 0].mean()) == pytest.approx(1.0) and float(x["optical"][2, 2].mean()) == pytest.approx(1.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OODLensError, match="holds no images"):
        read_image_folders(tmp_path)
