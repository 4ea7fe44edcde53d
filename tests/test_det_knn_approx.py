"""KNN's approximate IVF search: against a naive per-query implementation of the same index, never below the exact
score, equal to it when every cell is probed, save/load round trip, parameter errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from oodlens.detectors import get_detector
from oodlens.errors import OODLensError


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(8, 24, generator=g)
    train = centres[torch.randint(0, 8, (3000,), generator=g)] + torch.randn(3000, 24, generator=g)
    test = torch.cat([centres[torch.randint(0, 8, (100,), generator=g)] + torch.randn(100, 24, generator=g),
                      4 * torch.randn(100, 24, generator=g)])
    return {"features": train}, {"features": test}


def test_ivf_matches_naive_probe_and_never_lowers_the_score(data):
    train, test = data
    det = get_detector("knn")(k=10, search="ivf", cells=20, probes=3).fit(train)
    got = det.score(test)
    bank = F.normalize(train["features"], dim=1)
    cent = det.ivf_centroids_
    cell_of = (bank @ cent.T).argmax(1)  # every bank row lives in its nearest centroid's list
    for i in range(0, test["features"].shape[0], 7):
        q = F.normalize(test["features"][i], dim=0)
        probed = (cent @ q).topk(3).indices
        members = torch.isin(cell_of, probed).nonzero().squeeze(1)
        kth = members[(bank[members] @ q).topk(10).indices[-1]]
        assert abs(float(got[i]) - float(torch.linalg.vector_norm(q - bank[kth]))) < 1e-5
    exact = get_detector("knn")(k=10).fit(train).score(test)
    assert bool((got >= exact - 1e-6).all())
    assert float((got - exact).max()) > 0  # some neighbours were missed on this data


def test_ivf_probing_every_cell_is_exact_and_round_trips(data, tmp_path):
    train, test = data
    det = get_detector("knn")(k=10, search="ivf", cells=20, probes=20).fit(train)
    torch.testing.assert_close(det.score(test), get_detector("knn")(k=10).fit(train).score(test), rtol=0, atol=1e-5)
    det.save(tmp_path / "knn.safetensors")
    again = get_detector("knn").load(tmp_path / "knn.safetensors")
    assert torch.equal(again.score(test), det.score(test))


def test_ivf_short_lists_fall_back_to_exact(data):
    train, test = data
    det = get_detector("knn")(k=200, search="ivf", cells=90, probes=1).fit(train)  # ~33 rows per cell < k
    torch.testing.assert_close(det.score(test), get_detector("knn")(k=200).fit(train).score(test), rtol=0, atol=1e-5)
    assert det.last_fallbacks == test["features"].shape[0]


@pytest.mark.parametrize("params,match", [({"probes": 0}, "probes"), ({"cells": 0}, "cells"),
                                          ({"cells": 10 ** 6}, "cells")])
def test_ivf_bad_parameters(data, params, match):
    with pytest.raises(OODLensError, match=match):
        get_detector("knn")(k=5, search="ivf", **params).fit(data[0])
