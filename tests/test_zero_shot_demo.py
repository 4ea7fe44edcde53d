"""``oodlens demo text`` plumbing on the real corpus splits with a fast stand-in encoder (hashed bag of words; the
real MiniLM run is the demo itself), and the splits' properties."""

import argparse
import hashlib

import pytest
import torch

pytest.importorskip("chatterbot_corpus", reason="chatterbot-corpus is not installed")

from oodlens.bench.demos import _text_data, text  # noqa: E402


def _bag_of_words(groups, cache_dir, progress=True, batch_size=128):
    out = {}
    for name, texts in groups.items():
        m = torch.zeros(len(texts), 96)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                m[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 96] += 1.0
        out[name] = torch.nn.functional.normalize(m + 1e-3, dim=1)
    return out, {"cached": False, "cache": "-", "load_s": 0.0, "embed_s": 0.0}


def test_splits_are_disjoint_and_labelled():
    s = _text_data.load_text_splits(seed=0)
    train, val, test = (set(s.texts[k]) for k in ("train", "val", "test"))
    assert not (train & test) and not (train & val) and not (val & test)
    assert sorted(set(s.labels["train"])) == list(range(len(_text_data.ID_TOPICS)))
    assert s.kinds["covariate: same topics in Italian"] == "covariate"
    assert len(s.texts["far: word salad"]) == len(s.texts["test"])
    salad = sorted(w for t in s.texts["far: word salad"] for w in t.split())
    assert salad == sorted(w for t in s.texts["test"] for w in t.split())  # the same words, shuffled
    assert s.texts == _text_data.load_text_splits(seed=0).texts  # deterministic


def test_demo_runs_and_reports(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(text, "embed_groups", _bag_of_words)
    monkeypatch.setattr(text, "NEGLABEL_VOCAB", 300)
    monkeypatch.setattr(text, "NEGLABEL", {**text.NEGLABEL, "n_negatives": 45})
    args = argparse.Namespace(cache=str(tmp_path), out=str(tmp_path / "out"), seed=0, detectors=None,
                              no_progress=True, threads=1)
    assert text.run_demo(args) == 0
    printed = capsys.readouterr().out
    for fragment in ("zero-shot: MCM", "zero-shot: NegLabel", "trained head: ViM", "COOkeD-style", "Which family wins",
                     "ID test accuracy"):
        assert fragment in printed
    csv = (tmp_path / "out" / "results.csv").read_text()
    assert "AUROC far: random letters" in csv and (tmp_path / "out" / "report.md").is_file()
    assert "NegLabel" in (tmp_path / "out" / "report.html").read_text()
    res = text.run_text_benchmark(tmp_path, detectors=["mcm", "knn"])
    assert set(res["table"].index.get_level_values("detector")) == {"MCM (τ=1)", "KNN (k=5)"}
    assert ((res["table"] >= 0) & (res["table"] <= 1)).all().all()


def test_notes_follow_the_table():
    import pandas as pd

    idx = pd.MultiIndex.from_tuples([("zero-shot", "MCM (τ=1)"), ("zero-shot", "MaxLogit on cos"),
                                     ("label-free", "SSD (7 clusters of ~22 texts)")], names=["family", "detector"])
    df = pd.DataFrame({"AUROC near: x": [0.8, 0.7, 0.9], "AUROC far: salad": [0.55, 0.45, 0.8]}, index=idx)
    lines = text.notes(df)
    assert any("covariance='auto'" in s for s in lines)  # SSD shrinks its small clusters, no pseudo-inverse note
    assert any(s.startswith("MaxLogit on cos rank gibberish") for s in lines)
    assert not any("MCM" in s for s in lines)  # MCM stays above 50 % here: not named
    assert text.notes(df.iloc[:2].assign(**{"AUROC far: salad": 0.6})) == []
