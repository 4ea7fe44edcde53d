"""AURC, E-AURC, AUGRC and misclassification AUROC against brute-force implementations (ties included)."""

import math

import numpy as np
import pytest

from oodlens.errors import OODLensError
from oodlens.metrics import augrc, aurc, e_aurc, failure_metrics, misclassification_auroc, rc_curve
from oodlens.bench.reports.calibration import failure_summary


def brute_curves(conf, correct):
    """Every distinct confidence τ, from the lowest (all accepted) up; accept conf ≥ τ; then the coverage-0 point."""
    n = len(conf)
    cov, sel, gen = [], [], []
    for tau in sorted(set(conf)):
        acc = [i for i in range(n) if conf[i] >= tau]
        errs = sum(1 for i in acc if not correct[i])
        cov.append(len(acc) / n)
        sel.append(errs / len(acc))
        gen.append(errs / n)
    cov.append(0.0)
    sel.append(sel[-1])
    gen.append(0.0)
    return cov, sel, gen


def trapezoid(x, y):
    return sum((x[i] - x[i + 1]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))


def brute_auroc(conf, correct):
    fails = [c for c, ok in zip(conf, correct) if not ok]
    succ = [c for c, ok in zip(conf, correct) if ok]
    total = sum((f < s) + 0.5 * (f == s) for f in fails for s in succ)
    return total / (len(fails) * len(succ))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    conf = np.round(rng.random(150), 1 + seed)  # ties for seeds 0, 1
    correct = rng.random(150) < 0.3 + 0.6 * conf
    cov, sel, gen = brute_curves(conf.tolist(), correct.tolist())
    rc = rc_curve(conf, correct)
    assert np.allclose(rc["coverage"], cov) and np.allclose(rc["selective_risk"], sel)
    assert np.allclose(rc["generalized_risk"], gen)
    assert aurc(conf, correct) == pytest.approx(trapezoid(cov, sel), abs=1e-12)
    assert augrc(conf, correct) == pytest.approx(trapezoid(cov, gen), abs=1e-12)
    r = 1 - correct.mean()
    assert e_aurc(conf, correct) == pytest.approx(trapezoid(cov, sel) - (r + (1 - r) * math.log(1 - r)), abs=1e-12)
    assert misclassification_auroc(conf, correct) == pytest.approx(brute_auroc(conf.tolist(), correct.tolist()))
    # kind="score": an OOD score is a negated confidence
    assert aurc(-conf, correct, kind="score") == pytest.approx(aurc(conf, correct))
    assert augrc(-conf, correct, kind="score") == pytest.approx(augrc(conf, correct))
    m = failure_metrics(conf, correct)
    assert m["aurc"] == pytest.approx(aurc(conf, correct)) and m["failure_rate"] == pytest.approx(r)


def test_ood_inputs_count_as_failures():
    rng = np.random.default_rng(3)
    conf = rng.random(60)
    correct = rng.random(60) < 0.8
    is_ood = np.zeros(60, bool)
    is_ood[:10] = True
    fail_or_ood = ~correct | is_ood
    assert aurc(conf, correct, is_ood) == pytest.approx(aurc(conf, ~fail_or_ood))
    assert misclassification_auroc(conf, correct, is_ood) == pytest.approx(
        brute_auroc(conf.tolist(), (~fail_or_ood).tolist()))
    s = failure_summary(-conf, correct, is_ood)
    assert s["misclassification_auroc"] == pytest.approx(brute_auroc(conf[10:].tolist(), correct[10:].tolist()))
    assert s["failure_auroc_with_ood"] == pytest.approx(brute_auroc(conf.tolist(), (~fail_or_ood).tolist()))


def test_reference_points():
    # perfect ranking: E-AURC ≈ 0 (discrete curve vs the closed-form optimum), AUGRC ≈ r²/2
    conf = np.linspace(0, 1, 1000)
    correct = conf > 0.2
    assert abs(e_aurc(conf, correct)) < 2e-3
    assert augrc(conf, correct) == pytest.approx(0.5 * 0.2 ** 2, abs=1e-3)
    # no information (all tied): AURC = AUGRC·2 = error rate
    flat = np.zeros(100)
    ok = np.arange(100) >= 30
    assert aurc(flat, ok) == pytest.approx(0.3) and augrc(flat, ok) == pytest.approx(0.15)


def test_errors():
    with pytest.raises(OODLensError, match="kind"):
        aurc([0.1, 0.2], [True, False], kind="probability")
    with pytest.raises(OODLensError, match="one entry per score"):
        aurc([0.1, 0.2], [True])
    with pytest.raises(OODLensError, match="both failures and successes"):
        misclassification_auroc([0.1, 0.2], [True, True])
    with pytest.raises(OODLensError, match="non-finite"):
        augrc([0.1, float("nan")], [True, False])
    assert failure_metrics([0.1, 0.2], [True, True])["misclassification_auroc"] is None
