"""Fusion rules against naive formulas, the registered ``fused`` detector (common suite, exact save/load,
fallback calibration, validation-only logistic rule, overlap and disagreement errors) and the layering rule."""

import ast
import math
import statistics
import tempfile
from pathlib import Path

import pytest
import torch

import oodlens.fusion  # noqa: F401  (registers "fused": oodlens.detectors does not import fusion)
from oodlens.detectors import Detector, available_detectors, create
from oodlens.errors import NotFittedError, OODLensError
from oodlens.features import Features
from oodlens.fusion import Fused, ScoreFusion, combine_pvalues, stack_scores
from oodlens.fusion.rules import logistic_regression
from oodlens.testing import check_detector, make_toy_problem


@pytest.fixture(scope="module")
def toy():
    return make_toy_problem()


class Synth:
    """A cheap Gaussian problem (4 classes, 8-D features, linear logits) for everything but the common suite."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        centres, w = torch.randn(4, 8, generator=g) * 3, torch.randn(4, 8, generator=g)

        def make(n, shift=0.0):
            y = torch.randint(0, 4, (n,), generator=g)
            z = centres[y] + torch.randn(n, 8, generator=g) + shift
            return Features(features=z, logits=z @ w.T), y

        self.train, self.train_labels = make(400)
        self.test_id, self.test_id_labels = make(200)
        self.test_ood, _ = make(200, shift=4.0)


@pytest.fixture(scope="module")
def synth():
    return Synth()


def naive_combine(ps, method):
    k = len(ps)
    if method == "fisher":
        x = -sum(math.log(p) for p in ps)
        return math.exp(-x) * sum(x ** i / math.factorial(i) for i in range(k))
    if method == "bonferroni":
        return min(1.0, k * min(ps))
    if method == "simes":
        return min(1.0, min(k * p / j for j, p in enumerate(sorted(ps), 1)))
    if method == "harmonic":
        c = 1.0 if k == 1 else 2.0 if k == 2 else math.e * math.log(k)
        return min(1.0, c * k / sum(1 / p for p in ps))
    if method == "mean":
        return min(1.0, (2.0 if k > 1 else 1.0) * sum(ps) / k)


@pytest.mark.parametrize("method", ["fisher", "bonferroni", "simes", "harmonic", "mean"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_pvalue_combinations_match_naive(method, k):
    g = torch.Generator().manual_seed(k)
    p = torch.rand(30, k, generator=g, dtype=torch.float64) ** 3 + 1e-9
    p[0] = 1.0
    got = combine_pvalues(p, method)
    want = torch.tensor([naive_combine(row, method) for row in p.tolist()], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


def naive_member_p(cal, s):
    return [(1 + sum(c >= x for c in cal)) / (len(cal) + 1) for x in s]


def test_score_fusion_rules_match_naive():
    g = torch.Generator().manual_seed(0)
    cal = {"a": torch.randn(40, generator=g), "b": torch.randn(40, generator=g) * 3}
    test = {"a": torch.randn(25, generator=g) + 1, "b": torch.randn(25, generator=g) * 3}
    pa = naive_member_p(cal["a"].tolist(), test["a"].tolist())
    pb = naive_member_p(cal["b"].tolist(), test["b"].tolist())
    fisher = ScoreFusion("fisher").fit(cal).score(test)
    want = [-math.log(naive_combine([x, y], "fisher")) for x, y in zip(pa, pb)]
    assert torch.allclose(fisher, torch.tensor(want, dtype=torch.float64), rtol=1e-9)
    z = ScoreFusion("zscore").fit(cal).score(test)
    mu = {k: statistics.mean(v.tolist()) for k, v in cal.items()}
    sd = {k: statistics.stdev(v.tolist()) for k, v in cal.items()}
    want = [((test["a"][i].item() - mu["a"]) / sd["a"] + (test["b"][i].item() - mu["b"]) / sd["b"]) / 2
            for i in range(25)]
    assert torch.allclose(z, torch.tensor(want, dtype=torch.float64), atol=1e-6)
    with pytest.raises(OODLensError, match="differ from the fitted"):
        ScoreFusion("fisher").fit(cal).score({"b": test["b"], "a": test["a"]})


def test_logistic_is_the_regularised_optimum():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(120, 3, generator=g, dtype=torch.float64)
    y = (z[:, 0] - 0.5 * z[:, 1] + 0.3 * torch.randn(120, generator=g, dtype=torch.float64) > 0.4).double()
    c = 0.7
    w, b = logistic_regression(z, y, c)
    n1 = float(y.sum())
    weights = [len(y) / (2 * n1) if yi else len(y) / (2 * (len(y) - n1)) for yi in y.tolist()]
    grad = [wj for wj in w.tolist()] + [0.0]
    for i in range(len(y)):
        t = sum(w[j].item() * z[i, j].item() for j in range(3)) + b.item()
        r = c * weights[i] * (1 / (1 + math.exp(-t)) - y[i].item())
        for j in range(3):
            grad[j] += r * z[i, j].item()
        grad[3] += r
    assert max(abs(x) for x in grad) < 1e-7


def test_logistic_only_on_validation_with_ood():
    cal = torch.randn(50, 2, dtype=torch.float64)
    with pytest.raises(OODLensError, match="only be fitted on validation"):
        ScoreFusion("logistic").fit(cal, cal + 3, split="train")
    with pytest.raises(OODLensError, match="needs validation OOD"):
        ScoreFusion("logistic").fit(cal)
    assert ScoreFusion("logistic").fit(cal, cal + 3).score(cal + 3).mean() > 0


def test_members_that_disagree_on_n_raise():
    with pytest.raises(OODLensError, match=r"disagree on their inputs \(different N\): energy: N=10, knn: N=9"):
        stack_scores({"energy": torch.randn(10), "knn": torch.randn(9)})
    with pytest.raises(OODLensError, match="different N"):
        ScoreFusion("zscore").fit([torch.randn(10), torch.randn(9)])


def test_fused_is_registered_and_layering_holds():
    assert "fused" in available_detectors()
    pkg = Path(oodlens.fusion.__file__).parents[1] / "detectors"
    for f in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any("fusion" in n for n in names), f"{f.name} imports fusion"


@pytest.mark.parametrize("method", ["fisher", "logistic"])
def test_fused_passes_common_suite(method, toy):
    check_detector(create("fused", method=method), toy)


def _split(data):
    half = data.test_id.n // 2
    return data.test_id.subset(slice(0, half)), data.test_id_labels[:half], data.test_ood.subset(slice(0, half))


def test_fused_score_equals_naive_combination(synth):
    val, val_y, _ = _split(synth)
    fused = create("fused", members=[{"name": "energy", "params": {"temperature": 2.0}}, "mahalanobis"],
                   method="simes").fit(synth.train, synth.train_labels).fit_validation(val, val_y)
    e = create("energy", temperature=2.0).fit(synth.train)
    m = create("mahalanobis").fit(synth.train, synth.train_labels)
    x = synth.test_ood
    pe = naive_member_p(e.score(val).tolist(), e.score(x).tolist())
    pm = naive_member_p(m.score(val).tolist(), m.score(x).tolist())
    want = [-math.log(min(2 * min(a, b), 2 * max(a, b) / 2)) for a, b in zip(pe, pm)]  # Simes, unclipped
    assert torch.allclose(fused.score(x), torch.tensor(want, dtype=torch.float64), rtol=1e-9)
    assert fused.calibration_source_ == "validation"


def test_fallback_calibration_is_seeded_and_round_trips(synth):
    det = create("fused", seed=3).fit(synth.train, synth.train_labels)
    s = det.score(synth.test_id)
    assert det.calibration_source_ == "train-holdout"
    assert torch.equal(create("fused", seed=3).fit(synth.train, synth.train_labels).score(synth.test_id), s)
    assert not torch.equal(create("fused", seed=4).fit(synth.train, synth.train_labels).score(synth.test_id), s)
    with tempfile.TemporaryDirectory() as tmp:
        det.save(Path(tmp) / "f.safetensors")
        loaded = Fused.load(Path(tmp) / "f.safetensors")
        assert torch.equal(loaded.score(synth.test_id), s)
        assert [type(m).__name__ for m in loaded.member_detectors()] == ["Energy", "Mahalanobis"]
        assert not list(Path(tmp).glob("*.pkl"))
    with pytest.raises(NotFittedError, match="fit_validation"):
        create("fused", holdout=0.0).fit(synth.train, synth.train_labels).score(synth.test_id)
    with pytest.raises(NotFittedError, match="ood_val"):
        create("fused", method="logistic").fit(synth.train, synth.train_labels).score(synth.test_id)


def test_fused_errors(synth):
    val, val_y, _ = _split(synth)
    det = create("fused").fit(synth.train, synth.train_labels)
    with pytest.raises(OODLensError, match="overlaps the training data"):
        det.fit_validation(synth.train.subset(slice(0, 60)), synth.train_labels[:60])
    with pytest.raises(OODLensError, match="needs validation OOD"):
        create("fused", method="logistic").fit(synth.train, synth.train_labels).fit_validation(val, val_y)
    with pytest.raises(OODLensError, match="unknown detector 'nope'"):
        create("fused", members=["energy", "nope"]).fit(synth.train, synth.train_labels)
    with pytest.raises(OODLensError, match="non-empty list"):
        create("fused", members=[]).fit(synth.train, synth.train_labels)
    with pytest.raises(OODLensError, match="unknown fusion method"):
        create("fused", method="median").fit(synth.train, synth.train_labels)
    with pytest.raises(OODLensError, match="needs class labels"):
        create("fused").fit(synth.train)  # mahalanobis member needs labels
    assert create("fused", members=["energy", "msp"]).needs_labels is False
    assert Fused.needs_labels is True and create("fused", method="logistic").validation_needs == "id+ood"


def test_fused_float16_inputs(synth):
    val, val_y, _ = _split(synth)
    det = create("fused", method="zscore").fit(synth.train, synth.train_labels).fit_validation(val, val_y)
    half = {k: v.half() for k, v in synth.test_ood.items()}
    s16, s32 = det.score(half), det.score(synth.test_ood)
    assert torch.isfinite(s16).all() and torch.corrcoef(torch.stack([s16, s32]))[0, 1] > 0.999
