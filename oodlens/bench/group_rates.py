"""False-alarm and flag rates at the *calibrated* threshold, per test set and per acquisition group.

The threshold is the split-conformal one from the ID validation scores (the benchmark's calibration split):
``τ = S_(k)``, ``k = ⌈(n + 1)·level⌉`` (:func:`oodlens.calibrate.conformal_threshold`, marginal guarantee: ≥ level
of exchangeable ID inputs accepted). At that threshold, per detector:

* ``far_at_calibrated_<L>`` — share of ID test and of every covariate-shifted (still ID) set flagged, ``s > τ``:
  the false-alarm rate a deployment would see there (target ≤ 1 − level);
* the same per **group** (``TestSet.group``: a site, scanner, shift type), pooling the group's covariate sets, as
  rows named ``group:<name>`` — the table shows at a glance which site would drown in alarms;
* ``flagged_at_calibrated_<L>`` — share of each near / far OOD set flagged (its detection rate).

These rows are added whatever ``covariate_mode``: "accept" and "separate" decide how AUROC-type metrics treat the
covariate sets, the calibrated rates are reported for both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..calibrate import conformal_threshold
from ..errors import OODLensError
from .protocol import Benchmark


def calibrated_rate_rows(detector: str, scores: dict[str, np.ndarray], bench: Benchmark, level: float
                         ) -> list[dict[str, Any]]:
    """Rows (detector, test_set, kind, group, severity, metric, value) of the calibrated rates above."""
    try:
        tau = conformal_threshold(scores["val"], level).value
    except OODLensError:
        return []  # too few calibration scores for this level: no calibrated threshold to report
    tag = f"{level * 100:g}"
    far, flagged = f"far_at_calibrated_{tag}", f"flagged_at_calibrated_{tag}"
    rows = [{"detector": detector, "test_set": "test", "kind": "id", "group": None, "severity": None,
             "metric": far, "value": float(np.mean(scores["test"] > tau))}]
    by_group: dict[str, list[np.ndarray]] = {}
    for t in bench.test_sets:
        s = scores[t.name]
        metric = far if t.kind == "covariate" else flagged
        rows.append({"detector": detector, "test_set": t.name, "kind": t.kind, "group": t.group,
                     "severity": t.severity, "metric": metric, "value": float(np.mean(s > tau))})
        if t.kind == "covariate" and t.group is not None:
            by_group.setdefault(str(t.group), []).append(s)
    for g, parts in by_group.items():
        rows.append({"detector": detector, "test_set": f"group:{g}", "kind": "covariate", "group": g,
                     "severity": None, "metric": far, "value": float(np.mean(np.concatenate(parts) > tau))})
    return rows



def group_far_table(result: Any, level: float = 0.95) -> "pd.DataFrame":  # noqa: F821
    """Wide table detector × (``test``, then ``group:<name>`` columns) of the false-alarm rate at the calibrated
    threshold, from a :class:`~oodlens.bench.runner.BenchmarkResult`."""
    table = getattr(result, "table", None)
    if table is None or not hasattr(table, "metric"):
        raise OODLensError(f"group_far_table needs a BenchmarkResult (from run_benchmark), got {type(result).__name__}")
    metric = f"far_at_calibrated_{level * 100:g}"
    if not (table.metric == metric).any():
        have = sorted({m for m in table.metric.unique() if str(m).startswith("far_at_calibrated_")})
        raise OODLensError(f"the result has no {metric!r} rows (level={level!r}); it has {have or 'none'}")
    t = table[table.metric == metric]
    t = t[(t.test_set == "test") | t.test_set.str.startswith("group:")]
    wide = t.pivot(index="detector", columns="test_set", values="value")
    cols = ["test"] + sorted(c for c in wide.columns if c != "test")
    return wide.reindex(index=result.detectors, columns=cols)


__all__ = ["calibrated_rate_rows", "group_far_table"]
