"""Severity metrics for covariate shift at several strengths (e.g. corruption levels 1–5): does the OOD score
grow with the severity?

* :func:`severity_spearman` — Spearman's rank correlation ρ between severity level and score over all samples
  pooled (ID test data at level 0 by default). Ties — every sample of a level shares it, and scores may tie —
  get average ranks (``scipy.stats.spearmanr``), i.e. ρ is Pearson's correlation of the average ranks.
* :func:`auroc_by_severity` — AUROC of each severity level's scores against ID scores (higher score = more OOD).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import OODLensError
from .ood import _as_scores, auroc


def _levels(scores_by_severity: Mapping[Any, Any]) -> dict[float, np.ndarray]:
    if not isinstance(scores_by_severity, Mapping) or not scores_by_severity:
        raise OODLensError("scores_by_severity must be a non-empty dict {severity level: scores}")
    out = {}
    for level, s in scores_by_severity.items():
        try:
            lv = float(level)
        except (TypeError, ValueError):
            raise OODLensError(f"severity levels must be numbers, got {level!r}") from None
        out[lv] = _as_scores(s, f"scores at severity {level}").astype(np.float64)
    return out


def severity_spearman(scores_by_severity: Mapping[Any, Any], id_scores: Any = None, id_level: float = 0.0) -> float:
    """Spearman ρ between severity and score over all samples (``id_scores``, if given, at ``id_level``)."""
    from scipy.stats import spearmanr

    levels = _levels(scores_by_severity)
    if id_scores is not None:
        if id_level in levels:
            raise OODLensError(f"severity level {id_level:g} is used both by the ID scores and a shifted set")
        levels = {id_level: _as_scores(id_scores, "id_scores").astype(np.float64), **levels}
    if len(levels) < 2:
        raise OODLensError("Spearman correlation needs at least two severity levels (or ID scores)")
    sev = np.concatenate([np.full(s.shape[0], lv) for lv, s in levels.items()])
    sc = np.concatenate(list(levels.values()))
    if np.all(sc == sc[0]):
        raise OODLensError("all scores are equal: the rank correlation is undefined")
    return float(spearmanr(sev, sc).statistic)


def auroc_by_severity(id_scores: Any, scores_by_severity: Mapping[Any, Any]) -> dict[Any, float]:
    """AUROC (shifted vs ID, higher score = more OOD) per severity level, keyed as given, in ascending level."""
    sid = _as_scores(id_scores, "id_scores")
    _levels(scores_by_severity)
    keys = sorted(scores_by_severity, key=float)
    return {k: auroc(sid, scores_by_severity[k]) for k in keys}
