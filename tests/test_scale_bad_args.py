"""oodlens.scale refuses bad arguments with an OODLensError naming them, before any Ray job starts (no cluster
needed: a stand-in object with ``map_batches`` plays the dataset and must never be called)."""

import pytest
import torch

from oodlens.detectors.mahalanobis import Mahalanobis
from oodlens.errors import OODLensError
from oodlens.features import Features
from oodlens.scale import extraction, fit, score, shards


class NeverMapped:
    def map_batches(self, *a, **k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("map_batches called with bad arguments")


F = Features({"features": torch.randn(5, 3)})


@pytest.fixture(scope="module")
def fitted():
    return Mahalanobis().fit(F, torch.tensor([0, 0, 1, 1, 1]))


@pytest.mark.parametrize("kw, msg", [
    (dict(batch_size=0), "batch_size"), (dict(batch_size=2.5), "batch_size"),
    (dict(gpus_per_worker=-1), "gpus_per_worker"), (dict(gpus_per_worker=float("nan")), "gpus_per_worker"),
    (dict(workers=0), "workers"), (dict(output="features"), "output must be a new column"),
])
def test_score_dataset_bad_args(fitted, kw, msg):
    with pytest.raises(OODLensError, match=msg):
        score.score_dataset(fitted, NeverMapped(), **kw)


def test_not_a_dataset(fitted):
    with pytest.raises(OODLensError, match="Ray Dataset"):
        score.score_dataset(fitted, [1, 2, 3])
    with pytest.raises(OODLensError, match="Ray Dataset"):
        extraction.extract_to_shards(None, lambda: torch.nn.Linear(2, 2), "unused")


@pytest.mark.parametrize("kw, msg", [(dict(batch_size=0), "batch_size"), (dict(workers=0), "workers")])
def test_extract_bad_args(tmp_path, kw, msg):
    with pytest.raises(OODLensError, match=msg):
        extraction.extract_to_shards(NeverMapped(), lambda: torch.nn.Linear(2, 2), tmp_path, **kw)


def test_fit_shards_bad_args(tmp_path):
    with pytest.raises(OODLensError, match="must be an oodlens Detector"):
        fit.fit_shards("mahalanobis", [tmp_path / "a.safetensors"])
    with pytest.raises(OODLensError, match="retries"):
        fit.fit_shards(Mahalanobis(), [tmp_path / "a.safetensors"], retries=-1)


def test_write_shard_bad_args(tmp_path):
    with pytest.raises(OODLensError, match="must be integers"):
        shards.write_shard(tmp_path / "a.safetensors", F, torch.tensor([0.5, 1, 2, 3, 4]))
    with pytest.raises(OODLensError, match=r"labels must have shape \(5,\)"):
        shards.write_shard(tmp_path / "a.safetensors", F, torch.arange(5), torch.zeros(3))
    with pytest.raises(OODLensError, match="oodlens Features"):
        shards.write_shard(tmp_path / "a.safetensors", torch.randn(5, 3), torch.arange(5))
    with pytest.raises(OODLensError, match="does not exist"):
        shards.write_shard(tmp_path / "no" / "a.safetensors", F, torch.arange(5))
    p = shards.write_shard(tmp_path / "a.safetensors", F, torch.arange(5.0), torch.ones(5))
    feats, ids, labels = shards.read_shard(p)
    assert ids.dtype == torch.int64 and torch.equal(labels, torch.ones(5, dtype=torch.int64))
    assert torch.equal(feats["features"], F["features"])


@pytest.mark.parametrize("n", [0, "2", 1.5])
def test_init_local_bad_cpus(n):
    from oodlens.scale import init_local

    with pytest.raises(OODLensError, match="positive integer"):
        init_local(num_cpus=n)
