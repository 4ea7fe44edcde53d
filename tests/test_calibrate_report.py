"""The demo's entry point calibration_summary / format_calibration_summary against direct computations."""

import numpy as np
import pytest

from oodlens.bench.reports.calibration import calibration_summary, format_calibration_summary
from oodlens.errors import OODLensError


def naive_p(cal, s):
    cal = np.sort(cal)
    return np.array([(1 + np.sum(cal >= x)) / (len(cal) + 1) for x in s])


def naive_bh(p, alpha):
    m = len(p)
    order = np.argsort(p, kind="stable")
    k = max([j for j in range(1, m + 1) if p[order[j - 1]] <= alpha * j / m], default=0)
    out = np.zeros(m, bool)
    out[order[:k]] = True
    return out


def test_summary_matches_direct_computation():
    rng = np.random.default_rng(0)
    cal, idt = rng.normal(size=300), rng.normal(size=400)
    ood = {"near": rng.normal(1.0, 1, 150), "far": rng.normal(4, 1, 100)}
    s = calibration_summary(cal, idt, ood, fa_level=0.05, alpha=0.1)
    p_id = naive_p(cal, idt)
    assert s["false_alarm_rate"]["marginal"] == pytest.approx(np.mean(p_id <= 0.05))
    assert s["false_alarm_rate"]["dkw"] <= s["false_alarm_rate"]["marginal"]
    assert s["acceptance_rate"] == pytest.approx(np.mean(idt <= np.sort(cal)[int(np.ceil(301 * 0.95)) - 1]))
    assert s["acceptance_rate"] == pytest.approx(1 - s["false_alarm_rate"]["marginal"])
    p_all = np.concatenate([p_id, naive_p(cal, ood["near"]), naive_p(cal, ood["far"])])
    is_ood = np.r_[np.zeros(400, bool), np.ones(250, bool)]
    rej = naive_bh(p_all, 0.1)
    assert s["bh"]["n_flagged"] == rej.sum()
    assert s["bh"]["fdr"] == pytest.approx((rej & ~is_ood).sum() / max(rej.sum(), 1))
    assert s["bh"]["power"] == pytest.approx(rej[is_ood].mean())
    assert s["bh"]["power_by_set"]["far"] == pytest.approx(rej[550:].mean())
    assert s["detection_rate"]["far"] == pytest.approx(np.mean(naive_p(cal, ood["far"]) <= 0.05))
    lines = format_calibration_summary(s)
    assert len(lines) == 6 and "Benjamini–Hochberg at FDR 0.1" in lines[4]


def test_ood_fraction_subsamples_reproducibly():
    rng = np.random.default_rng(1)
    cal, idt = rng.normal(size=200), rng.normal(size=300)
    ood = {"a": rng.normal(3, 1, 300), "b": rng.normal(3, 1, 100)}
    s = calibration_summary(cal, idt, ood, ood_fraction=0.25, seed=7)
    assert s["batch"] == {"n": 400, "n_ood": 100, "n_id": 300}
    assert calibration_summary(cal, idt, ood, ood_fraction=0.25, seed=7)["bh"] == s["bh"]


def test_errors():
    x = np.random.default_rng(2).normal(size=100)
    with pytest.raises(OODLensError, match="identical"):
        calibration_summary(x, x.copy(), {"o": x + 3})
    with pytest.raises(OODLensError, match="too small"):
        calibration_summary(x[:10], x, {"o": x + 3}, fa_level=0.05)
    with pytest.raises(OODLensError, match="non-empty dict"):
        calibration_summary(x, x[::-1] + 1, {})
