"""Monitor: per-input records against naive conformal computations, flags vs thresholds, BH screening, several
detectors, a model run on raw inputs, folder save/load without pickle, and clear errors."""

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from oodlens.detectors import create
from oodlens.errors import NotFittedError, OODLensError
from oodlens.features import Features
from oodlens.monitor import Monitor


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    net = Net().eval()
    centres = torch.randn(3, 6, generator=g) * 3

    def inputs(n, shift=0.0):
        y = torch.randint(0, 3, (n,), generator=g)
        return centres[y] + torch.randn(n, 6, generator=g) + shift, y

    with torch.no_grad():
        def feats(x):
            return Features(features=net.body(x), logits=net(x))
        x_tr, y_tr = inputs(300)
        x_cal, _ = inputs(120)
        x_te, _ = inputs(80)
        x_ood, _ = inputs(40, shift=6.0)
        return {"net": net, "x_tr": x_tr, "y_tr": y_tr, "x_cal": x_cal, "x_te": x_te, "x_ood": x_ood,
                "train": feats(x_tr), "cal": feats(x_cal), "test": feats(x_te), "ood": feats(x_ood)}


def naive_p(cal, s):
    return np.array([(1 + sum(c >= x for c in cal)) / (len(cal) + 1) for x in s])


def test_single_detector_records(setup):
    det = create("energy").fit(setup["train"])
    mon = Monitor(None, det, setup["cal"], acceptance=0.9)
    df = mon.assess(setup["test"])
    p = naive_p(det.score(setup["cal"]).tolist(), det.score(setup["test"]).tolist())
    assert np.allclose(df["p_value"], p) and np.allclose(df["degree"], 1 - p)
    assert (df["flag"] == (p <= 0.1 + 1e-12)).all()
    assert (df["flag"] == (df["score"] > mon.thresholds["energy"])).all()
    assert (df["prediction"] == setup["test"]["logits"].argmax(1).numpy()).all()
    assert df["reading"][0].startswith("OOD degree ")
    assert list(df.columns) == ["prediction", "score", "p_value", "degree", "flag", "reading"]


@pytest.mark.parametrize("pvalues", ["simes", "dkw"])
def test_conditional_pvalues_flag_at_their_threshold(setup, pvalues):
    det = create("mahalanobis").fit(setup["train"], setup["y_tr"])
    mon = Monitor(None, det, setup["cal"], acceptance=0.5, pvalues=pvalues, delta=0.2)
    df = mon.assess(Features.concat([setup["test"], setup["ood"]]))
    assert (df["flag"] == (df["score"] > mon.thresholds["mahalanobis"])).all()
    assert df["flag"][-40:].all()


def test_several_detectors_and_screening(setup):
    e = create("energy").fit(setup["train"])
    m = create("mahalanobis").fit(setup["train"], setup["y_tr"])
    mon = Monitor(None, {"e": e, "m": m}, setup["cal"], acceptance=0.9, combine="bonferroni")
    batch = Features.concat([setup["test"], setup["ood"]])
    df = mon.screen(batch, alpha=0.1)
    pe = naive_p(e.score(setup["cal"]).tolist(), e.score(batch).tolist())
    pm = naive_p(m.score(setup["cal"]).tolist(), m.score(batch).tolist())
    assert np.allclose(df["p_value/e"], pe) and np.allclose(df["p_value/m"], pm)
    comb = np.minimum(1, 2 * np.minimum(pe, pm))
    assert np.allclose(df["p_value"], comb)
    # naive BH
    order = np.argsort(comb, kind="stable")
    k = max([j for j in range(1, len(comb) + 1) if comb[order[j - 1]] <= 0.1 * j / len(comb)], default=0)
    want = np.zeros(len(comb), bool)
    want[order[:k]] = True
    assert (df["screen_flag"].to_numpy() == want).all() and df.attrs["n_flagged"] == k
    assert df["screen_flag"][-40:].mean() > 0.5 > df["screen_flag"][:80].mean()
    assert "bonferroni over 2 detectors" in df["reading"][0]


def test_raw_inputs_and_save_load(setup):
    net = setup["net"]
    det = create("mahalanobis").fit(setup["train"], setup["y_tr"])
    mon = Monitor(net, det, setup["x_cal"], layers={"body": "features"}, acceptance=0.9, pvalues="simes",
                  delta=0.2)
    df = mon.assess(setup["x_ood"])
    assert np.allclose(df["score"], det.score(setup["ood"]).numpy(), rtol=1e-5)
    with tempfile.TemporaryDirectory() as tmp:
        mon.save(tmp)
        files = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*") if p.is_file())
        assert files == ["calibration.safetensors", "detectors/0.safetensors", "manifest.json"]
        assert json.loads((Path(tmp) / "manifest.json").read_text())["pvalues"] == "simes"
        again = Monitor.load(tmp, model=net)
        assert again.assess(setup["x_ood"]).equals(df)
        features_only = Monitor.load(tmp)
        assert features_only.assess(setup["ood"]).drop(columns="prediction").equals(df.drop(columns="prediction"))
        with pytest.raises(OODLensError, match="no model"):
            features_only.assess(setup["x_ood"])


def test_fused_detector_in_a_monitor_round_trips(setup):
    half = setup["test"].n // 2
    fused = create("fused", members=["energy", "mahalanobis"], method="fisher").fit(setup["train"], setup["y_tr"])
    fused.fit_validation(setup["test"].subset(slice(0, half)))
    mon = Monitor(None, fused, setup["cal"], acceptance=0.9)
    with tempfile.TemporaryDirectory() as tmp:
        mon.save(tmp)
        assert Monitor.load(tmp).assess(setup["ood"]).equals(mon.assess(setup["ood"]))
    with pytest.raises(OODLensError, match="overlaps detector 'fused'"):
        Monitor(None, fused, setup["train"].subset(slice(0, 50)))


def test_errors(setup):
    det = create("energy").fit(setup["train"])
    with pytest.raises(NotFittedError, match="not fitted"):
        Monitor(None, create("energy"), setup["cal"])
    with pytest.raises(OODLensError, match=r"too small.*n ≥ 1/α − 1 = 99"):
        Monitor(None, det, setup["cal"].subset(slice(0, 50)), acceptance=0.99)
    with pytest.raises(OODLensError, match="overlaps the fitting data"):
        Monitor(None, det, setup["train"].subset(slice(0, 100)), fit_data=setup["train"])
    with pytest.raises(OODLensError, match="no model"):
        Monitor(None, det, setup["x_cal"])
    with pytest.raises(OODLensError, match="combine"):
        Monitor(None, det, setup["cal"], combine="zscore")
    with pytest.raises(OODLensError, match="not a saved monitor"):
        Monitor.load(tempfile.gettempdir() + "/definitely-not-a-monitor")
    assert math.isclose(Monitor(None, det, setup["cal"], acceptance=0.95).alpha, 0.05)
