"""``oodlens demo segmentation`` end to end on a tiny configuration (cold, then from the weight cache)."""

from types import SimpleNamespace

import pytest

from oodlens.bench.demos import segmentation as demo
from oodlens.errors import OODLensError


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(demo, "N_TRAIN", 48)
    monkeypatch.setattr(demo, "N_TEST", 12)
    monkeypatch.setattr(demo, "EPOCHS", 1)
    monkeypatch.setattr(demo, "ABET_EPOCHS", 1)


def test_demo_cold_then_cached(tiny, tmp_path, capsys):
    args = SimpleNamespace(cache=str(tmp_path / "cache"), out=str(tmp_path / "out"), seed=0, detectors=None,
                           no_progress=True, threads=1)
    assert demo.run_demo(args) == 0
    text = capsys.readouterr().out
    for name in ("msp", "maxlogit", "entropy", "energy", "gen", "sml", "mahalanobis", "knn", "abet", "mIoU",
                 "pooled", "sIoU", "trained and cached"):
        assert name in text, name
    for f in ("segmentation.md", "segmentation.csv", "segmentation.png"):
        assert (tmp_path / "out" / f).is_file(), f
    assert list((tmp_path / "cache").glob("*/fcn*.safetensors"))
    args.detectors, args.out = "msp,abet", None
    assert demo.run_demo(args) == 0
    text = capsys.readouterr().out
    assert "loaded from" in text and "| sml |" not in text and "| abet |" in text
    args.detectors = "nope"
    with pytest.raises(OODLensError, match="unknown score"):
        demo.run_demo(args)
