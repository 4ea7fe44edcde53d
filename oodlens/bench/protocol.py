"""A benchmark definition: ID train (fit), ID validation (calibration and tuning), ID test, and named test sets
tagged ``near``, ``far`` or ``covariate``; optionally validation OOD for tuning.

Covariate-shifted ID is handled in one of two ways (``covariate_mode``):

* ``"separate"`` — each covariate set is its own row, scored as if it were OOD (does the detector flag the shift?);
* ``"accept"`` — full-spectrum: covariate-shifted ID counts as ID, so for near/far rows the ID side is ID test ∪
  every covariate set, and covariate rows report how much of the shifted data is flagged at the 95 %-ID threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._checks import check_labels
from ..errors import OODLensError
from ..features import Features

KINDS = ("near", "far", "covariate")
COVARIATE_MODES = ("separate", "accept")


@dataclass
class TestSet:
    """One named test set. ``group``/``severity`` describe graded covariate shifts (e.g. rotate at severity 3)."""

    name: str
    features: Features
    kind: str
    labels: torch.Tensor | None = None
    group: str | None = None
    severity: int | None = None

    __test__ = False  # not a pytest class

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise OODLensError(f"test set {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.features, Features):
            self.features = Features(self.features)
        if self.features.n == 0:
            raise OODLensError(f"test set {self.name!r} is empty")
        if self.labels is not None:
            self.labels = check_labels(self.labels, self.features.n, f"labels of test set {self.name!r}")


@dataclass
class Benchmark:
    """Everything a benchmark run needs. Detectors fit on ``train`` only; hyper-parameters are tuned on ``val``
    against ``val_ood`` only; test sets are scored once, after every choice is made."""

    name: str
    train: Features
    train_labels: torch.Tensor | None
    val: Features
    val_labels: torch.Tensor | None
    test: Features
    test_labels: torch.Tensor | None
    test_sets: list[TestSet]
    val_ood: Features | None = None
    head: Any = None
    model: nn.Module | None = None
    covariate_mode: str = "separate"
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per-detector replacement of ``param_grid`` for tuning (e.g. a smaller grid for slow model-based methods)
    param_grids: dict[str, dict[str, list]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.covariate_mode not in COVARIATE_MODES:
            raise OODLensError(f"covariate_mode must be one of {COVARIATE_MODES}, got {self.covariate_mode!r}")
        for split in ("train", "val", "test"):
            feats = getattr(self, split)
            if not isinstance(feats, Features):
                setattr(self, split, Features(feats))
            labels = getattr(self, f"{split}_labels")
            if labels is not None:
                setattr(self, f"{split}_labels", check_labels(labels, getattr(self, split).n, f"{split} labels"))
        if self.val_ood is not None and not isinstance(self.val_ood, Features):
            self.val_ood = Features(self.val_ood)
        names = [t.name for t in self.test_sets]
        if len(set(names)) != len(names):
            raise OODLensError(f"test set names must be unique, got {names}")
        if not self.test_sets:
            raise OODLensError("a benchmark needs at least one test set")
        common = set(self.train.keys())
        for label, feats in [("val", self.val), ("test", self.test), ("val_ood", self.val_ood),
                             *[(f"test set {t.name!r}", t.features) for t in self.test_sets]]:
            if feats is not None and not common <= set(feats.keys()):
                missing = sorted(common - set(feats.keys()))
                raise OODLensError(f"{label} lacks features the training split has: {missing}")

    @property
    def feature_names(self) -> list[str]:
        return list(self.train.keys())
