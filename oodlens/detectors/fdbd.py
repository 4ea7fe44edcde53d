"""fDBD (Liu & Qin, ICML 2024, "Fast Decision Boundary based Out-of-Distribution Detector").

The mean distance from the feature to the decision boundaries between the predicted class ŷ and every other
class, regularised by the feature's distance to the training mean:

    ŷ = argmax_c f_c(z),   f(z) = W z + b                      (the classifier head)
    DB(z) = 1/(C−1) Σ_{c≠ŷ} |(w_ŷ − w_c)·z + (b_ŷ − b_c)| / ‖w_ŷ − w_c‖
    score(z) = − DB(z) / ‖z − μ_train‖           (normalizer="distance", the paper's score)
    score(z) = − DB(z) / ‖z‖                     (normalizer="norm", OpenOOD's alternative regulariser)

The paper's score (higher = more ID) is negated so that higher means more OOD. ``μ_train`` is the mean training
feature. Checked against the official code (github.com/litianliu/fDBD-OOD, run_cifar.py) and OpenOOD's
fdbd_postprocessor: the reference *sums* over c (the c = ŷ term is 0 / 1) where the paper averages; the two differ
by the constant factor C−1 and rank samples identically — the paper's mean is used here. OpenOOD selects between
the two regularisers on validation data (``distance_as_normalizer`` in {True, False}); that sweep is ``param_grid``.

Vectorised over classes: ‖w_ŷ − w_c‖² = ‖w_ŷ‖² + ‖w_c‖² − 2 w_ŷ·w_c for all (sample, class) pairs by one matrix
product in float64 (no C×C table, no loop over classes), in blocks of rows so that memory stays bounded. A head with two identical weight rows has no boundary
between those classes and is refused at fit; ‖z − μ_train‖ is clamped at 1e-12 so a feature exactly at the mean
gives a large finite score instead of a division by zero.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._neighbours import block_shape, blocks
from .base import Detector, Head

_NORMALIZERS = ("distance", "norm")
_TINY = 1e-12


def check_distinct_rows(head: Head, method: str) -> None:
    """Raise if the head has fewer than 2 classes or two classes with identical weight vectors."""
    c = head.weight.shape[0]
    if c < 2:
        raise OODLensError(f"{method} needs a head with at least 2 classes, got {c}")
    distinct = torch.unique(head.weight, dim=0).shape[0]
    if distinct < c:
        raise OODLensError(f"{method}: the head has {c - distinct} duplicated weight row(s), so some decision "
                           "boundaries do not exist; remove duplicated classes from the head")


def boundary_distances(z: torch.Tensor, head: Head) -> torch.Tensor:
    """Mean distance (N,) from each row of ``z`` to the C−1 decision boundaries of its predicted class, float64."""
    w = head.weight.to(z.device, torch.float64)
    b = head.bias.to(z.device, torch.float64)
    z64 = z.to(torch.float64)
    logits = torch.addmm(b, z64, w.T)
    top, pred = logits.max(1)
    w_pred = w[pred]                                          # (N, D)
    w_sq = (w * w).sum(1)                                     # (C,)
    sq = (w_sq[pred][:, None] + w_sq[None, :] - 2.0 * (w_pred @ w.T)).clamp_min_(0)
    gaps = (top[:, None] - logits).abs()                      # |(w_ŷ − w_c)·z + (b_ŷ − b_c)|
    ratio = gaps / sq.sqrt().scatter_(1, pred[:, None], 1.0)  # the c = ŷ term is 0 / 1 = 0
    return ratio.sum(1) / (w.shape[0] - 1)


class FDBD(Detector):
    name = "fdbd"
    needs_head = True
    param_grid = {"normalizer": ["distance", "norm"]}
    score_only_params = frozenset({"normalizer"})

    def __init__(self, normalizer: str = "distance", features: str = "features"):
        self.normalizer = normalizer
        self.features = features

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    def _check_normalizer(self) -> None:
        if self.normalizer not in _NORMALIZERS:
            raise OODLensError(f"normalizer must be one of {_NORMALIZERS}, got {self.normalizer!r}")

    def _fit(self, train, labels, head, model) -> None:
        self._check_normalizer()
        z = as_float(train[self.features])
        if z.shape[1] != head.weight.shape[1]:
            raise OODLensError(f"feature {self.features!r} has D={z.shape[1]} but the head expects D={head.weight.shape[1]}")
        check_distinct_rows(head, "fDBD")
        self.head_ = head
        self.train_mean_ = z.to(torch.float64).mean(0)

    def _score(self, x) -> torch.Tensor:
        self._check_normalizer()
        z = as_float(x[self.features])
        rows, _ = block_shape(z.shape[0], self.head_.weight.shape[0])   # (rows × C) float64 blocks
        db = torch.cat([boundary_distances(z[r], self.head_) for r in blocks(z.shape[0], rows)])
        z64 = z.to(torch.float64)
        centre = z64 - self.train_mean_.to(z.device) if self.normalizer == "distance" else z64
        return (-db / centre.norm(dim=1).clamp_min(_TINY)).to(z.dtype)
