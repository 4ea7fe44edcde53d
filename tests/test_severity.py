"""Severity metrics: Spearman ρ against a naive average-rank implementation, AUROC per level against pairs."""

import math

import numpy as np
import pytest

from oodlens.bench.reports.calibration import format_severity_summary, severity_summary
from oodlens.errors import OODLensError
from oodlens.metrics import auroc_by_severity, severity_spearman


def avg_ranks(x):
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def naive_spearman(a, b):
    ra, rb = avg_ranks(a), avg_ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


def test_spearman_and_auroc_match_naive():
    rng = np.random.default_rng(0)
    id_s = np.round(rng.normal(size=40), 1)
    by = {1: np.round(rng.normal(0.3, 1, 30), 1), 3: np.round(rng.normal(1.5, 1, 30), 1),
          2: np.round(rng.normal(0.8, 1, 30), 1)}
    lv = [0] * 40 + [k for k in by for _ in by[k]]
    sc = id_s.tolist() + [x for k in by for x in by[k].tolist()]
    assert severity_spearman(by, id_s) == pytest.approx(naive_spearman(lv, sc), abs=1e-12)
    lv2 = [k for k in by for _ in by[k]]
    assert severity_spearman(by) == pytest.approx(naive_spearman(lv2, sc[40:]), abs=1e-12)
    a = auroc_by_severity(id_s, by)
    assert list(a) == [1, 2, 3]
    for k, v in a.items():
        pairs = [(o > i) + 0.5 * (o == i) for o in by[k] for i in id_s]
        assert v == pytest.approx(sum(pairs) / len(pairs))
    s = severity_summary(id_s, by)
    assert s["spearman"] == pytest.approx(naive_spearman(lv, sc)) and s["auroc_monotone"]
    assert len(format_severity_summary(s)) == 2


def test_errors():
    with pytest.raises(OODLensError, match="non-empty dict"):
        severity_spearman({})
    with pytest.raises(OODLensError, match="at least two"):
        severity_spearman({1: [0.1, 0.2]})
    with pytest.raises(OODLensError, match="both by the ID"):
        severity_spearman({0: [0.1, 0.2], 1: [0.3]}, id_scores=[0.0, 0.1])
    with pytest.raises(OODLensError, match="all scores are equal"):
        severity_spearman({1: [1.0, 1.0], 2: [1.0]})
    with pytest.raises(OODLensError, match="numbers"):
        auroc_by_severity([0.1], {"high": [0.3]})
