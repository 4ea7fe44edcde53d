"""Monitor.adapt: weighted conformal p-values for a new site's rows in assess (against the formula with the fitted
weights), Mondrian rows untouched, readings, and save/load of the adapted site."""

import tempfile

import numpy as np
import pytest
import torch

from oodlens.calibrate import weighted_pvalues
from oodlens.detectors import create
from oodlens.errors import OODLensError
from oodlens.features import Features
from oodlens.monitor import Monitor


def test_adapted_site_gets_weighted_pvalues_and_survives_save_load():
    g = torch.Generator().manual_seed(0)
    x = lambda n, shift=0.0: Features(features=torch.randn(n, 4, generator=g) + shift)  # noqa: E731
    train, cal, unl = x(300), x(200), x(150, 0.7)
    test = Features(features=torch.cat([x(30, 0.7)["features"], x(10)["features"]]))
    det = create("mahalanobis_one_class").fit(train)
    groups = ["A"] * 100 + ["B"] * 100
    mon = Monitor(None, det, cal, groups=groups)
    with pytest.raises(OODLensError, match="adapt"):
        Monitor(None, det, cal).assess(test, groups="C")
    dw = mon.adapt("C", unl, folds=3)
    assert 0 < dw.ess_ < 200
    labels = ["C"] * 30 + ["A"] * 10
    df = mon.assess(test, groups=labels)
    s_cal, s = det.score(cal).double(), det.score(test).double()
    want_c = weighted_pvalues(s_cal, dw.source_weights_, s[:30], dw.weights(test["features"][:30]))
    assert np.allclose(df["p_value"][:30], want_c.numpy())
    want_a = (1 + (s_cal[:100][None] >= s[30:, None]).sum(1)) / 101.0
    assert np.allclose(df["p_value"][30:], want_a.numpy())
    assert list(df["group"]) == labels and df.attrs["unseen_groups"] == []
    assert "reweighted to look like site 'C'" in df["reading"][0]
    with tempfile.TemporaryDirectory() as tmp:
        mon.save(tmp)
        again = Monitor.load(tmp)
        assert list(again.sites) == ["C"]
        df2 = again.assess(test, groups=labels)
    assert np.allclose(df2["p_value"], df["p_value"]) and list(df2["reading"]) == list(df["reading"])
    with pytest.raises(OODLensError, match="reserved"):
        mon.adapt("pooled", unl)
