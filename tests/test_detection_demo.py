"""The detection demo end to end on a shrunken configuration (tiny data, few training steps): tables printed,
files written, the trained weights cached as safetensors and reused."""

import types

import pytest

from oodlens.bench.demos import _detection_run as run
from oodlens.bench.demos import detection


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(run, "SIZES", dict(train=60, val=60, test=30, near=30, far=30, mixed=30, videos=4, frames=6))
    monkeypatch.setattr(run, "TRAIN_STEPS", 5)


def test_demo_runs_and_caches(small, tmp_path, capsys):
    args = types.SimpleNamespace(cache=str(tmp_path / "c"), out=str(tmp_path / "o"), seed=0,
                                 detectors=["msp", "energy", "knn"], no_progress=True, threads=None,
                                 bootstrap=10)
    assert detection.run_demo(args) == 0
    out = capsys.readouterr().out
    assert "VOS protocol" in out and "mAP50" in out and "Open-set" in out and "time to detection" in out
    assert (tmp_path / "c" / f"{run.CACHE_VERSION}-seed0.safetensors").exists()
    assert (tmp_path / "o" / "detection_vos.csv").exists()
    html = (tmp_path / "o" / "report.html").read_text()
    assert "VOS protocol" in html and "Example test image" in html and "data:image/png;base64," in html
    assert detection.run_demo(args) == 0
    assert "loaded from cache" in capsys.readouterr().out
