"""Run detectors on a :class:`Benchmark`: tune on validation, fit on train, score every split once, and collect a
tidy table (detector × test set × metric)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..detectors import Detector, create, detectors_for
from ..errors import OODLensError
from ..metrics import ood_metrics
from .group_rates import calibrated_rate_rows
from .protocol import Benchmark, TestSet
from .tuning import fit_detector, tune


@dataclass
class BenchmarkResult:
    """Scores and metrics of one run. ``table`` is tidy: one row per (detector, test set, metric)."""

    name: str
    table: pd.DataFrame
    scores: dict[str, dict[str, np.ndarray]]
    params: dict[str, dict[str, Any]]
    tuned: dict[str, bool]
    seconds: dict[str, float]
    skipped: dict[str, str]
    id_accuracy: float | None
    set_accuracy: dict[str, float]
    test_sets: list[TestSet]
    covariate_mode: str
    notes: list[str] = field(default_factory=list)
    #: per input of ID test ("test") and of each labelled test set: was the classifier right
    correct: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def detectors(self) -> list[str]:
        return list(self.scores)

    def metric(self, metric: str) -> pd.DataFrame:
        """Wide table: detector × test set for one metric."""
        t = self.table[self.table.metric == metric]
        return t.pivot(index="detector", columns="test_set", values="value").reindex(index=self.detectors)


def _resolve(detectors: Iterable[str | Detector] | None, bench: Benchmark) -> list[Detector]:
    if detectors is None:
        names = detectors_for(bench.feature_names, labels=bench.train_labels is not None,
                              head=bench.head is not None, model=bench.model is not None,
                              params=bench.detector_params)
        detectors = names
    out = []
    for d in detectors:
        if isinstance(d, Detector):
            out.append(d)
        else:
            out.append(create(d, **bench.detector_params.get(d, {})))
    return out


def _label(det: Detector, taken: set[str]) -> str:
    label = det.name or type(det).__name__
    base, i = label, 2
    while label in taken:
        label, i = f"{base}#{i}", i + 1
    return label


def run_benchmark(bench: Benchmark, detectors: Iterable[str | Detector] | None = None, tune_params: bool = True,
                  objective: str = "auroc", level: float = 0.95, progress: bool = True) -> BenchmarkResult:
    """Evaluate ``detectors`` (names or instances; default: every registered one whose needs the benchmark meets).

    For each detector: if validation OOD exists and tuning is on, choose hyper-parameters on validation
    (:func:`~oodlens.bench.tuning.tune`); fit on train; run its validation stage; score validation, ID test and
    every test set once. A detector that raises :class:`OODLensError` is skipped with the reason recorded.
    """
    from tqdm.auto import tqdm

    dets = _resolve(detectors, bench)
    scores: dict[str, dict[str, np.ndarray]] = {}
    params: dict[str, dict[str, Any]] = {}
    tuned: dict[str, bool] = {}
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    notes: list[str] = []
    if bench.val_ood is None and tune_params:
        notes.append("no validation OOD: hyper-parameters are the detectors' defaults (not tuned)")
    bar = tqdm(dets, desc="detectors", disable=not progress, leave=False)
    for det in bar:
        label = _label(det, set(scores) | set(skipped))
        bar.set_postfix_str(label)
        start = time.perf_counter()
        try:
            was_tuned = False
            if tune_params and bench.val_ood is not None and bench.param_grids.get(det.name, det.param_grid):
                best, _ = tune(det, bench, objective=objective)
                det = det.clone(**best)
                was_tuned = True
            fit_detector(det, bench)
            s = {"val": det.score(bench.val), "test": det.score(bench.test)}
            if bench.val_ood is not None:
                s["val_ood"] = det.score(bench.val_ood)
            for t in bench.test_sets:
                s[t.name] = det.score(t.features)
        except OODLensError as e:
            skipped[label] = str(e)
            continue
        seconds[label] = time.perf_counter() - start
        scores[label] = {k: v.detach().float().cpu().numpy() for k, v in s.items()}
        params[label] = det.get_params()
        tuned[label] = was_tuned
    table = _metrics_table(scores, bench, level)
    correct = {}
    for name, feats, labels in [("test", bench.test, bench.test_labels),
                                *[(t.name, t.features, t.labels) for t in bench.test_sets]]:
        if labels is not None and "logits" in feats:
            correct[name] = (feats["logits"].argmax(1) == labels.to(feats["logits"].device)).cpu().numpy()
    id_acc = float(correct["test"].mean()) if "test" in correct else None
    set_acc = {k: float(v.mean()) for k, v in correct.items() if k != "test"}
    return BenchmarkResult(bench.name, table, scores, params, tuned, seconds, skipped, id_acc, set_acc,
                           list(bench.test_sets), bench.covariate_mode, notes, correct)


def _metrics_table(scores: dict[str, dict[str, np.ndarray]], bench: Benchmark, level: float) -> pd.DataFrame:
    rows = []
    cov = [t for t in bench.test_sets if t.kind == "covariate"]
    for det, s in scores.items():
        id_scores = s["test"]
        if bench.covariate_mode == "accept" and cov:
            id_scores = np.concatenate([id_scores, *[s[t.name] for t in cov]])
        threshold = np.quantile(s["test"], level, method="higher")
        for t in bench.test_sets:
            base = {"detector": det, "test_set": t.name, "kind": t.kind, "group": t.group, "severity": t.severity}
            if t.kind == "covariate" and bench.covariate_mode == "accept":
                rows.append({**base, "metric": f"flagged_at_{level * 100:g}_id", "value": float(np.mean(s[t.name] > threshold))})
                continue
            for metric, value in ood_metrics(id_scores, s[t.name], level).items():
                rows.append({**base, "metric": metric, "value": value})
        rows += calibrated_rate_rows(det, s, bench, level)  # FAR at the calibrated threshold, per set and group
    columns = ["detector", "test_set", "kind", "group", "severity", "metric", "value"]
    return pd.DataFrame(rows, columns=columns)

