"""Per-detector calibration, screening, severity and failure figures for a finished benchmark run:

* false alarms: share of ID test with conformal p ≤ ``fa_level`` (p-values from ID validation scores);
* BH at FDR ``alpha`` on one mixed batch (ID test + every near/far set): realised FDR and power;
* Spearman ρ between covariate severity (ID test = 0) and score, per shift;
* AURC / E-AURC / AUGRC of the classifier on ID test ∪ the labelled covariate sets (where it makes mistakes),
  ranking inputs by the detector's score (lower score = accepted first), and the misclassification AUROC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .reports.calibration import calibration_summary, failure_summary, severity_summary
from .runner import BenchmarkResult


def calibration_table(result: BenchmarkResult, fa_level: float = 0.05, alpha: float = 0.1, seed: int = 0) -> pd.DataFrame:
    ood_sets = [t.name for t in result.test_sets if t.kind in ("near", "far")]
    groups: dict[str, dict[int, str]] = {}
    for t in result.test_sets:
        if t.kind == "covariate" and t.group is not None and t.severity is not None:
            groups.setdefault(t.group, {})[int(t.severity)] = t.name
    rows = []
    for det, s in result.scores.items():
        row: dict[str, float | None] = {}
        if ood_sets:
            cal = calibration_summary(s["val"], s["test"], {k: s[k] for k in ood_sets}, fa_level, alpha, seed)
            row[f"false alarms p≤{fa_level:g}"] = cal["false_alarm_rate"]["marginal"]
            row[f"BH FDR (α={alpha:g})"] = cal["bh"]["fdr"]
            row["BH power"] = cal["bh"]["power"]
        for group, by_sev in groups.items():
            sev = severity_summary(s["test"], {k: s[name] for k, name in sorted(by_sev.items())})
            row[f"ρ {group}"] = sev["spearman"]
        labelled = [k for k in ["test", *(t.name for t in result.test_sets if t.kind == "covariate")] if k in result.correct]
        if labelled:
            correct = np.concatenate([result.correct[k] for k in labelled])
            if 0 < correct.sum() < correct.size:
                f = failure_summary(np.concatenate([s[k] for k in labelled]), correct)
                row.update({"AURC": f["aurc"], "E-AURC": f["e_aurc"], "AUGRC": f["augrc"],
                            "misclass. AUROC": f["misclassification_auroc"]})
        rows.append(pd.Series(row, name=det))
    return pd.DataFrame(rows)
