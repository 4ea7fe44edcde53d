"""A small problem with a known answer, and the checks every registered detector must pass.

Users adding a method in one file can run ``check_detector(MyDetector())`` to get the same checks as the built-ins.

The toy problem is a real (tiny) CNN trained for a few seconds on 8×8 images of 4 classes (class templates plus
noise). It provides, for ID train / ID test / OOD test: ``inputs`` (N, 1, 8, 8), pooled layers ``block1`` (N, 8)
and ``block2`` (N, 16), the spatial maps ``block1_map`` (N, 8, 8, 8) and ``block2_map`` (N, 16, 4, 4),
penultimate ``features`` (N, 16) and ``logits`` (N, 4); plus labels, the head and the model.
OOD inputs are built from four other templates at the same amplitude (new classes), which logit-, feature-
and distance-based detectors all separate (MSP AUROC ≈ 0.96, Mahalanobis ≈ 1.0).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .detectors.base import Detector, Head
from .errors import MissingFeatureError, NotFittedError, OODLensError
from .extract import extract
from .features import Features
from .metrics import auroc


class ToyCNN(nn.Module):
    """conv(1→8) → conv(8→16, stride 2) → global average → linear(16→C)."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block2(self.block1(x))))


@dataclass
class ToyProblem:
    train: Features
    train_labels: torch.Tensor
    test_id: Features
    test_id_labels: torch.Tensor
    test_ood: Features
    head: Head
    model: nn.Module


def _images(templates: torch.Tensor, n: int, amplitude: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, templates.shape[0], (n,), generator=g)
    x = amplitude * templates[y] + 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    return x, y


def _features(model: nn.Module, x: torch.Tensor) -> Features:
    pooled, _ = extract(model, x, layers={"block1": "block1", "block2": "block2", "pool": "features"}, progress=False)
    maps, _ = extract(model, x, layers={"block1": "block1_map", "block2": "block2_map"}, pool="none",
                      logits=False, progress=False)
    return pooled.merge(maps).merge({"inputs": x})


@functools.lru_cache(maxsize=4)
def make_toy_problem(seed: int = 0, n_train: int = 600, n_test: int = 200) -> ToyProblem:
    """Train the toy CNN (deterministic for a seed, about a second on a CPU) and extract its features."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(8, 1, 8, 8, generator=g)
    x_tr, y_tr = _images(templates[:4], n_train, 1.0, g)
    x_te, y_te = _images(templates[:4], n_test, 1.0, g)
    x_ood, _ = _images(templates[4:], n_test, 1.0, g)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ToyCNN(4)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(150):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_tr), y_tr).backward()
            opt.step()
    model.eval()
    return ToyProblem(_features(model, x_tr), y_tr, _features(model, x_te), y_te, _features(model, x_ood),
                      Head.coerce(model.fc), model)


def toy_detector(detector: Detector) -> Detector:
    """Apply the detector class's ``test_params`` (names of the toy's layers) to a copy."""
    return detector.clone(**getattr(type(detector), "test_params", {}))


def fit_on_toy(detector: Detector, toy: ToyProblem) -> Detector:
    """``fit`` on the toy's training split, then ``fit_validation`` on its ID test split's first half and, as
    validation OOD, the OOD split's first half (the common suite checks plumbing, not generalisation)."""
    detector.fit(toy.train, toy.train_labels, head=toy.head, model=toy.model)
    if detector.validation_needs:
        half = toy.test_id.n // 2
        ood = toy.test_ood.subset(slice(0, half)) if detector.validation_needs == "id+ood" else None
        detector.fit_validation(toy.test_id.subset(slice(0, half)), toy.test_id_labels[:half], ood)
    return detector


def check_detector(detector: Detector, toy: ToyProblem | None = None, min_auroc: float = 0.6) -> dict[str, Any]:
    """Run the common checks on an unfitted detector; raise AssertionError on the first failure.

    Contract, determinism, exact save/load round-trip, row-order equivariance, clear errors on bad input,
    and better than chance on the toy problem. Returns a few figures (e.g. the toy AUROC).
    """
    import tempfile
    from pathlib import Path

    toy = toy or make_toy_problem()
    det = toy_detector(detector)
    name = type(det).__name__

    # contract: unfitted, fit returns self, score shape / dtype / finiteness
    try:
        det.score(toy.test_id)
        raise AssertionError(f"{name}: scoring before fit did not raise")
    except NotFittedError:
        pass
    assert fit_on_toy(det, toy) is det, f"{name}.fit must return self"
    s_id, s_ood = det.score(toy.test_id), det.score(toy.test_ood)
    assert s_id.shape == (toy.test_id.n,), f"{name}: score shape {tuple(s_id.shape)}"
    assert s_id.is_floating_point() and torch.isfinite(s_id).all() and torch.isfinite(s_ood).all()
    params = det.get_params()
    assert det.clone().get_params() == params, f"{name}: clone() lost hyper-parameters"

    # determinism: a second fit gives the same scores
    again = fit_on_toy(det.clone(), toy).score(toy.test_id)
    assert torch.allclose(s_id, again, rtol=1e-5, atol=1e-6), f"{name}: two fits gave different scores"

    # exact save / load round-trip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "det.safetensors"
        det.save(path)
        loaded = Detector.load(path)
        assert type(loaded) is type(det) and loaded.get_params() == params
        if det.needs_model:
            loaded.attach_model(toy.model)
        assert torch.equal(loaded.score(toy.test_id), s_id), f"{name}: scores changed after save/load"

    # scores follow row order
    perm = torch.randperm(toy.test_id.n, generator=torch.Generator().manual_seed(1))
    s_perm = det.score(toy.test_id.subset(perm))
    assert torch.allclose(s_perm, s_id[perm], rtol=1e-4, atol=1e-5), f"{name}: scores depend on row order"

    # bad input gives clear errors
    req = det.required_features()
    bad = dict(toy.test_id)
    t = bad[req[0]].clone().float()
    t.view(-1)[0] = float("nan")
    bad[req[0]] = t
    _expect(OODLensError, lambda: det.score(Features(bad)), f"{name}: NaN input", "non-finite")
    missing = {k: v for k, v in toy.test_id.items() if k != req[0]}
    _expect(MissingFeatureError, lambda: det.score(Features(missing)), f"{name}: missing feature", req[0])
    wrong = dict(toy.test_id)
    wrong[req[0]] = toy.test_id[req[0]][:, :1] if toy.test_id[req[0]].ndim == 2 else toy.test_id[req[0]][:, :1, :1]
    _expect(OODLensError, lambda: det.score(Features(wrong)), f"{name}: wrong shape", "shape")

    # better than chance where the answer is known
    a = auroc(s_id, s_ood)
    assert a > min_auroc, f"{name}: toy AUROC {a:.3f} is not above {min_auroc}"
    return {"auroc": a}


def write_toy_benchmark(toy: ToyProblem, folder: Any) -> dict[str, Any]:
    """Write the toy problem as the feature files of an ``oodlens bench`` config (train; ID test split in halves
    as val and test; the OOD set as one far test set) into ``folder``; return the config's fields."""
    from pathlib import Path

    root = Path(folder)
    half = toy.test_id.n // 2
    for split, feats, y in (("train", toy.train, toy.train_labels),
                            ("val", toy.test_id.subset(slice(0, half)), toy.test_id_labels[:half]),
                            ("test", toy.test_id.subset(slice(half, None)), toy.test_id_labels[half:]),
                            ("ood", toy.test_ood, None)):
        d = {"features": feats["features"], "logits": feats["logits"]}
        if y is not None:
            d["labels"] = y
        Features(d).save(root / f"{split}.safetensors")
    return {"train": {"features": "train.safetensors", "labels": "labels"},
            "val": {"features": "val.safetensors", "labels": "labels"},
            "test": {"features": "test.safetensors", "labels": "labels"},
            "test_sets": [{"name": "ood", "kind": "far", "features": "ood.safetensors"}]}


def _expect(exc: type[Exception], fn, what: str, fragment: str) -> None:
    try:
        fn()
    except exc as e:
        assert fragment.lower() in str(e).lower(), f"{what}: error message {str(e)!r} does not mention {fragment!r}"
        return
    raise AssertionError(f"{what} did not raise {exc.__name__}")
