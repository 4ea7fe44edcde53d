"""The interpretable degree: nearest training examples against a brute-force search, drivers, the reading
sentence, and the Monitor's group-conditional assess (columns, unseen groups named, save/load round-trip)."""

import tempfile
import warnings

import numpy as np
import pytest
import torch

import oodlens.fusion  # noqa: F401
from oodlens.calibrate.explain import FeatureBank, drivers, explain_table
from oodlens.detectors import create
from oodlens.errors import OODLensError
from oodlens.features import Features
from oodlens.monitor import Monitor


def test_feature_bank_matches_brute_force_cosine_neighbours():
    gen = torch.Generator().manual_seed(0)
    bank, q = torch.randn(200, 8, generator=gen), torch.randn(15, 8, generator=gen)
    idx, dist = FeatureBank(bank, k=3).nearest(q)
    b = bank / bank.norm(dim=1, keepdim=True)
    u = q / q.norm(dim=1, keepdim=True)
    full = torch.cdist(u.double(), b.double())
    want_d, want_i = full.topk(3, largest=False)
    assert torch.equal(idx, want_i)
    assert torch.allclose(dist, want_d, atol=1e-5)
    with pytest.raises(OODLensError, match="k must be"):
        FeatureBank(bank, k=0)
    with pytest.raises(OODLensError, match="like the bank"):
        FeatureBank(bank).nearest(torch.randn(2, 3))


def test_drivers_and_explain_table():
    names, p = drivers({"knn": [0.5, 0.01], "energy": [0.2, 0.3]})
    assert names == ["energy", "knn"] and torch.allclose(p, torch.tensor([0.2, 0.01], dtype=torch.float64))
    bank = FeatureBank(torch.eye(4), k=1, ids=["a", "b", "c", "d"])
    t = explain_table([0.3, 0.01], ["q0", "q1"], ["site A", "pooled"], bank, torch.eye(4)[[1, 2]],
                      (names, p))
    assert t["nearest"] == [[1], [2]] and t["degree"] == pytest.approx([0.7, 0.99])
    assert t["reading"][0] == "OOD degree 0.700 (calibrated in group 'site A'): q0; nearest training examples b (0.00); " \
                              "driven by energy (its p = 0.2)"
    assert "calibrated in all groups pooled" in t["reading"][1]
    with pytest.raises(OODLensError, match="quantile"):
        explain_table([0.3], ["a", "b"])


@pytest.fixture(scope="module")
def sites():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(300, 5, generator=g)
    cal = torch.cat([torch.randn(100, 5, generator=g), torch.randn(100, 5, generator=g) * 1.5])
    test = torch.cat([torch.randn(20, 5, generator=g) * 1.5, torch.randn(20, 5, generator=g) + 4])
    return train, cal, ["A"] * 100 + ["B"] * 100, test


def test_monitor_assess_with_groups_and_bank(sites):
    train, cal, groups, test = sites
    det = create("knn", k=5).fit({"features": train})
    mon = Monitor(None, det, {"features": cal}, groups=groups, bank={"features": train}, neighbours=2)
    df = mon.assess({"features": test}, groups=["B"] * 20 + ["C"] * 20)
    for col in ("p_value", "degree", "flag", "group", "quantile", "nearest", "nearest_distance", "driver", "reading"):
        assert col in df.columns, col
    s_cal, s = det.score({"features": cal}).double(), det.score({"features": test}).double()
    cal_b = s_cal[100:]
    want_b = (1 + (cal_b[None] >= s[:20, None]).sum(1)) / 101.0
    want_c = (1 + (s_cal[None] >= s[20:, None]).sum(1)) / 201.0
    assert np.allclose(df["p_value"].to_numpy(), torch.cat([want_b, want_c]).numpy())
    assert list(df["group"][:20]) == ["B"] * 20 and list(df["group"][20:]) == ["pooled"] * 20
    assert df.attrs["unseen_groups"] == ["C"]
    assert "unseen group 'C'" in df["reading"][25] and "nearest training examples #" in df["reading"][0]
    assert len(df["nearest"][0]) == 2
    # marginal assess without groups keeps the pooled p-values
    plain = mon.assess({"features": test}, explain=False)
    assert np.allclose(plain["p_value"].to_numpy(), ((1 + (s_cal[None] >= s[:, None]).sum(1)) / 201.0).numpy())
    with tempfile.TemporaryDirectory() as tmp:
        mon.save(tmp)
        again = Monitor.load(tmp).assess({"features": test}, groups=["B"] * 20 + ["C"] * 20)
    assert again.drop(columns=["reading"]).equals(df.drop(columns=["reading"]))
    assert list(again["reading"]) == list(df["reading"])


def test_monitor_groups_errors_and_small_groups(sites):
    train, cal, groups, test = sites
    det = create("knn", k=5).fit({"features": train})
    with pytest.raises(OODLensError, match="without groups"):
        Monitor(None, det, {"features": cal}).assess({"features": test}, groups="A")
    with pytest.warns(UserWarning, match="small calibration groups"):
        Monitor(None, det, {"features": cal}, groups=["A"] * 190 + ["tiny"] * 10)


def test_monitor_driver_of_fused_and_of_several_detectors(sites):
    train, cal, _, test = sites
    feats = lambda x: Features(features=x)  # noqa: E731
    fused = create("fused", members=["knn", "mahalanobis_one_class"], method="bonferroni")
    fused.fit(feats(train)).fit_validation(feats(cal[:100]))
    mon = Monitor(None, fused, feats(cal[100:]))
    df = mon.assess(feats(test), explain=True)
    assert set(df["driver"]) <= {"knn", "mahalanobis_one_class"} and "driven by" in df["reading"][0]
    two = Monitor(None, [create("knn", k=5).fit(feats(train)), create("ssd").fit(feats(train))], feats(cal))
    d2 = two.assess(feats(test), explain=True)
    p_knn, p_ssd = d2["p_value/knn"].to_numpy(), d2["p_value/ssd"].to_numpy()
    assert list(d2["driver"]) == ["knn" if a <= b else "ssd" for a, b in zip(p_knn, p_ssd)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two.assess(feats(test))  # no explanation columns by default without groups or bank


def test_drivers_of_no_member_is_a_clear_error():
    with pytest.raises(OODLensError, match="at least one member"):  # was: "members disagree ...: {}"
        drivers({})
