"""Modality-score fusion and attribution against naive formulas; the modality-wise detector end to end."""

import math

import pytest
import torch

from oodlens.detectors import create
from oodlens.errors import NotFittedError, OODLensError
from oodlens.features import Features
from oodlens.multimodal import ModalityCalibration, ModalityWiseDetector


def naive(cal, test):
    """z-scores, conformal p-values and the four fused scores by loops."""
    mods = list(cal)
    out = []
    for i in range(len(test[mods[0]])):
        zs, ps = [], []
        for m in mods:
            c = [float(v) for v in cal[m]]
            mu = sum(c) / len(c)
            sd = math.sqrt(sum((v - mu) ** 2 for v in c) / (len(c) - 1))
            s = float(test[m][i])
            zs.append((s - mu) / sd)
            ps.append((1 + sum(1 for v in c if v >= s)) / (len(c) + 1))
        out.append({"z": zs, "p": ps, "max_z": max(zs), "mean_z": sum(zs) / len(zs),
                    "min_p": -math.log(min(ps)), "fisher": -2 * sum(math.log(p) for p in ps)})
    return out


def test_fusion_rules_match_naive():
    g = torch.Generator().manual_seed(0)
    cal = {"video": torch.randn(30, generator=g), "flow": torch.randn(30, generator=g) * 5 + 3,
           "audio": torch.randn(30, generator=g).round()}  # ties in the calibration scores
    test = {"video": torch.randn(9, generator=g) * 2, "flow": torch.randn(9, generator=g) * 5 + 3,
            "audio": torch.tensor([0.0, 1, -1, 2, 5, -5, 0, 1, 3])}
    want = naive(cal, test)
    calib = ModalityCalibration(["video", "flow", "audio"]).fit(cal)
    z, p = calib.zscores(test), calib.pvalues(test)
    for i, w in enumerate(want):
        assert z[i].tolist() == pytest.approx(w["z"], abs=1e-9)
        assert p[i].tolist() == pytest.approx(w["p"], abs=1e-12)
    for rule in ("max_z", "mean_z", "min_p", "fisher"):
        assert calib.fuse(test, rule).tolist() == pytest.approx([w[rule] for w in want], abs=1e-9)


def test_attribution_names_the_unusual_modality():
    g = torch.Generator().manual_seed(1)
    cal = {"video": torch.randn(200, generator=g), "flow": torch.randn(200, generator=g) * 10}
    # flow's raw values are large but ordinary for flow; video is 4 standard deviations out
    test = {"video": torch.tensor([4.0, 0.0]), "flow": torch.tensor([5.0, 40.0])}
    att = ModalityCalibration(["video", "flow"]).fit(cal).attribute(test)
    assert att.top == ["video", "flow"]
    assert att.share() == {"video": 0.5, "flow": 0.5}
    assert att.p[0, 0] < att.p[0, 1]


def test_calibration_errors():
    calib = ModalityCalibration(["video", "flow"])
    with pytest.raises(NotFittedError):
        calib.zscores({"video": torch.zeros(2), "flow": torch.zeros(2)})
    with pytest.raises(OODLensError, match="constant"):
        calib.fit({"video": torch.ones(5), "flow": torch.randn(5)})
    with pytest.raises(OODLensError, match="lack modalities"):
        calib.fit({"video": torch.randn(5)})
    with pytest.raises(OODLensError, match="non-finite"):
        calib.fit({"video": torch.tensor([1.0, float("nan")]), "flow": torch.randn(2)})
    with pytest.raises(OODLensError, match="fusion rule"):
        calib.fit({"video": torch.randn(5), "flow": torch.randn(5)}).fuse({"video": torch.zeros(1), "flow": torch.zeros(1)}, "max")


def feats(n, c, g, shift=None):
    y = torch.randint(0, c, (n,), generator=g)
    out = {}
    for m, d in (("video", 5), ("flow", 4)):
        protos = torch.arange(c * d, dtype=torch.float32).view(c, d) % 3 * 3
        x = protos[y] + torch.randn(n, d, generator=g) * 0.5
        if shift == m:
            x = x + 8.0
        out[f"{m}/features"] = x
        out[f"{m}/logits"] = -((x[:, None, :] - protos[None]) ** 2).sum(-1)
    return Features(out), y


def test_modality_wise_detector_matches_manual_and_attributes():
    g = torch.Generator().manual_seed(2)
    train, ytr = feats(200, 3, g)
    val, _ = feats(80, 3, g)
    test, _ = feats(50, 3, g)
    broken, _ = feats(50, 3, g, shift="flow")
    mw = ModalityWiseDetector("mahalanobis", ["video", "flow"], rule="max_z").fit(train, ytr).calibrate(val)
    # manual: the same detector per modality, standardised on validation scores
    zs = []
    for m in ("video", "flow"):
        det = create("mahalanobis").fit(train.modality(m), ytr)
        c = det.score(val.modality(m)).double()
        zs.append((det.score(broken.modality(m)).double() - c.mean()) / c.std())
    want = torch.stack(zs, 1).amax(1).float()
    assert torch.allclose(mw.score(broken), want, rtol=1e-5, atol=1e-5)
    assert mw.attribute(broken).share()["flow"] > 0.95
    assert float(mw.score(broken).mean()) > float(mw.score(test).mean())
    assert mw.name == "mahalanobis[max_z]"


def test_modality_wise_detector_errors():
    g = torch.Generator().manual_seed(3)
    train, ytr = feats(60, 3, g)
    mw = ModalityWiseDetector("energy", ["video", "flow"])
    with pytest.raises(NotFittedError):
        mw.score(train)
    mw.fit(train, ytr)
    with pytest.raises(NotFittedError, match="calibrate"):
        mw.score(train)
    with pytest.raises(OODLensError, match="unknown detector"):
        ModalityWiseDetector("no_such_detector", ["video", "flow"])
    with pytest.raises(OODLensError, match="no features with prefix"):
        ModalityWiseDetector("energy", ["audio"]).fit(train)
