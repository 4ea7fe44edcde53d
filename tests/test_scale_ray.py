"""oodlens.scale on a local Ray cluster (2 CPUs, one cluster for the module): distributed extraction, fit, scoring
and sharded KNN equal the one-process results; a killed worker is retried exactly; a bad shard is refused."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from oodlens.detectors import get_detector
from oodlens.detectors._gaussian_stats import gaussian_stats
from oodlens.detectors._principal import head_origin
from oodlens.detectors.base import Head
from oodlens.errors import OODLensError
from oodlens.extract import extract
from oodlens.features import Features

ray = pytest.importorskip("ray")
scale = pytest.importorskip("oodlens.scale")

N, D_IN, D, C = 600, 12, 16, 4


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, D), nn.ReLU(), nn.Linear(D, C))


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    scale.init_local(num_cpus=2)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.verbose_progress = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(cluster, tmp_path_factory):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, C, (N,), generator=g)
    x = torch.randn(N, D_IN, generator=g) + 2.0 * torch.nn.functional.one_hot(y, D_IN).float()
    ds = ray.data.from_items([{"x": x[i].numpy(), "label": int(y[i]), "id": i} for i in range(N)])
    out = tmp_path_factory.mktemp("shards")
    paths = scale.extract_to_shards(ds, build_model, out, layers={"1": "features"}, batch_size=128, workers=2)
    model = build_model()
    ref, _ = extract(model, x, layers={"1": "features"}, progress=False)
    return {"paths": paths, "x": x, "y": y, "ref": ref, "head": Head.coerce(model[2]), "dir": out}


def test_extraction_writes_shards_equal_to_one_process(data):
    assert len(data["paths"]) >= -(-N // 128)  # one shard per batch (Ray Data may cut batches at block ends)
    feats, ids, labels = scale.load_all(data["paths"])
    assert torch.equal(ids, torch.arange(N)) and torch.equal(labels, data["y"])
    for name in ("features", "logits"):
        torch.testing.assert_close(feats[name], data["ref"][name], rtol=0, atol=1e-6)


def _naive_gaussian(z, y):
    z = z.double()
    mu = torch.stack([z[y == c].mean(0) for c in range(C)])
    s = sum((z[y == c] - mu[c]).T @ (z[y == c] - mu[c]) for c in range(C))
    return mu, s / z.shape[0]


@pytest.mark.parametrize("name,params", [("mahalanobis", {}), ("gmm", {"covariance": "per_class"}), ("rmds", {})])
def test_gaussian_fit_from_shards_equals_one_process(data, name, params):
    feats, _, labels = scale.load_all(data["paths"])
    stats = scale.shard_statistics(get_detector(name)(**params), data["paths"])
    mu, cov = _naive_gaussian(feats["features"], labels)  # independent formula
    one = gaussian_stats(feats["features"], labels, per_class=True)
    assert torch.allclose(stats.means, mu, rtol=0, atol=1e-10)
    assert torch.allclose(stats.tied_covariance(), cov, rtol=0, atol=1e-10)
    assert torch.allclose(stats.tied_covariance(), one.tied_covariance(), rtol=0, atol=1e-10)
    if stats.class_scatter is not None:
        assert torch.allclose(stats.class_scatter, one.class_scatter, rtol=0, atol=1e-10)
    dist = scale.fit_shards(get_detector(name)(**params), data["paths"])
    local = get_detector(name)(**params).fit(feats, labels)
    torch.testing.assert_close(dist.score(data["ref"]), local.score(data["ref"]), rtol=1e-5, atol=1e-4)


def test_vim_fit_from_shards_equals_one_process(data):
    feats, _, _ = scale.load_all(data["paths"])
    head = data["head"]
    stats = scale.shard_statistics(get_detector("vim")(dim=6), data["paths"], head=head)
    c = feats["features"].double() - head_origin(head, D)
    assert torch.allclose(stats.moment, c.T @ c, rtol=0, atol=1e-10 * float((c.T @ c).abs().max()))
    dist = scale.fit_shards(get_detector("vim")(dim=6), data["paths"], head=head)
    local = get_detector("vim")(dim=6).fit(feats, head=head)
    assert abs(dist.alpha_ - local.alpha_) <= 1e-10 * abs(local.alpha_)
    torch.testing.assert_close(dist.score(data["ref"]), local.score(data["ref"]), rtol=1e-5, atol=1e-5)


def _score_ds(ref: Features):
    return ray.data.from_items([{"features": ref["features"][i].numpy(), "logits": ref["logits"][i].numpy(), "id": i}
                                for i in range(ref.n)])


def test_score_dataset_equals_one_process_logit_and_gaussian(data):
    feats, _, labels = scale.load_all(data["paths"])
    ds = _score_ds(data["ref"])
    for det in (get_detector("energy")().fit(feats), get_detector("mahalanobis")().fit(feats, labels)):
        got = scale.collect_scores(scale.score_dataset(det, ds, workers=2, batch_size=100))
        torch.testing.assert_close(got, det.score(data["ref"]), rtol=0, atol=1e-5)


def test_killed_score_worker_is_retried_exactly(data, tmp_path):
    feats, _, _ = scale.load_all(data["paths"])
    det = get_detector("energy")().fit(feats)
    marker = tmp_path / "die-once"
    marker.write_text("x")
    got = scale.collect_scores(scale.score_dataset(det, _score_ds(data["ref"]), workers=2, batch_size=100,
                                                   crash_marker=str(marker)))
    assert not marker.exists()  # a worker did die
    torch.testing.assert_close(got, det.score(data["ref"]), rtol=0, atol=1e-5)


def test_sharded_knn_equals_one_process_and_survives_a_killed_actor(data):
    feats, _, _ = scale.load_all(data["paths"])
    queries = data["ref"]["features"][::3] + 0.1
    local = get_detector("knn")(k=7).fit(feats)
    knn = scale.ShardedKNN(data["paths"], k=7, workers=2)
    try:
        torch.testing.assert_close(knn.score(queries), local.score({"features": queries}), rtol=1e-5, atol=1e-6)
        v, _ = knn.neighbours(queries)
        v_ref, _ = local.neighbours({"features": queries})
        torch.testing.assert_close(v, v_ref, rtol=0, atol=1e-6)
        ray.kill(knn.shards[0], no_restart=False)  # dies; restarts from its files, the calls are retried
        torch.testing.assert_close(knn.score(queries), local.score({"features": queries}), rtol=1e-5, atol=1e-6)
    finally:
        knn.close()


def test_shard_with_another_width_is_refused(data, tmp_path):
    bad = tmp_path / "shard-999999999999.safetensors"
    scale.write_shard(bad, Features(features=torch.randn(5, D + 1), logits=torch.randn(5, C)), torch.arange(5),
                      torch.zeros(5, dtype=torch.long))
    paths = [*data["paths"], str(bad)]
    with pytest.raises(OODLensError, match=r"shard-999999999999.*\(17,\).*\(16,\)"):
        scale.fit_shards(get_detector("mahalanobis")(), paths)
    with pytest.raises(OODLensError, match=r"shard-999999999999.*\(17,\)"):
        scale.ShardedKNN(paths, k=3, workers=2)
    det = get_detector("energy")().fit(data["ref"])  # a dataset of another width: the worker's error, unwrapped
    rows = ray.data.from_items([{"logits": np.zeros(C + 1, np.float32), "id": i} for i in range(4)])
    with pytest.raises(OODLensError, match=r"feature 'logits' has shape \(4, 5\) but the detector expects"):
        scale.collect_scores(scale.score_dataset(det, rows))
    save_file({"features": torch.zeros(2, 2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(OODLensError, match="not an oodlens feature shard"):
        scale.read_shard(tmp_path / "plain.safetensors")


def test_sharded_knn_queries_nan_or_empty_and_nan_bank(data, tmp_path):
    knn = scale.ShardedKNN(data["paths"][:1], k=3, workers=1)
    try:
        with pytest.raises(OODLensError, match="non-finite"):  # were scored NaN silently
            knn.score(torch.full((2, D), float("nan")))
        assert knn.score(torch.zeros(0, D)).shape == (0,)  # was a ValueError inside a Ray task
        v, i = knn.neighbours(torch.zeros(0, D))
        assert v.shape == i.shape == (0, 3)
    finally:
        knn.close()
    bad = scale.write_shard(tmp_path / "shard-000000000000.safetensors",
                            Features(features=torch.full((4, D), float("nan"))), torch.arange(4))
    with pytest.raises(OODLensError, match="non-finite"):
        scale.ShardedKNN([bad], k=2, workers=1)
