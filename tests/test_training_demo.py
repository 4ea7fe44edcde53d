"""``oodlens demo training`` end to end on a tiny budget: tables, files, cache reuse."""

from types import SimpleNamespace

import pytest

from oodlens.bench.demos import _training_runs as runs
from oodlens.bench.demos import training


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(runs, "EPOCHS", 1)
    monkeypatch.setattr(training, "EPOCHS", 1)
    monkeypatch.setattr(training, "N_SEEDS", 2)
    subset = {k: runs.METHOD_FACTORIES[k] for k in ("ce", "oe", "abet")}
    monkeypatch.setattr(training, "METHOD_FACTORIES", subset)


def test_demo_runs_writes_reports_and_reuses_the_cache(tiny, tmp_path, capsys):
    args = SimpleNamespace(cache=str(tmp_path / "cache"), out=str(tmp_path / "out"), seed=0, detectors="msp,knn",
                           no_progress=True, threads=1)
    assert training.run_demo(args) == 0
    text = capsys.readouterr().out
    assert "own score" in text and "AbeT" in text and "Outlier Exposure" in text and " ± " in text
    assert "6 networks trained" in text
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "report.md").is_file()
    csv = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(csv) == 1 + 3 * 2 * 3  # methods × seeds × (own + 2 post-hoc)
    assert training.run_demo(args) == 0
    assert "0 networks trained" in capsys.readouterr().out
