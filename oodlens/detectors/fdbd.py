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

Vectorised over classes: the (C, C) table of ‖w_i − w_c‖ comes from ‖w_i‖² + ‖w_j‖² − 2 w_i·w_j in float64 at
score time (one C×C×D product, no loop over classes); each sample then divides its logit gaps by the row of its
predicted class. Scored in the input precision (float64 features give float64 scores; float32 and float16 give
float32), in row blocks that reuse their work buffers, so memory stays bounded; μ_train is accumulated in float64
over row blocks at fit (no float64 copy of the training features). A head with two identical weight
rows has no boundary between those classes and is refused at fit; ‖z − μ_train‖ is clamped at 1e-12 so a feature
exactly at the mean gives a large finite score instead of a division by zero.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._blocks import rows_within
from ._gaussian import mean64
from .base import Detector, Head

_NORMALIZERS = ("distance", "norm")
_TINY = 1e-12
#: numbers per (rows × D) work buffer when scoring in row blocks
_BLOCK = 1 << 22


def check_distinct_rows(head: Head, method: str) -> None:
    """Raise if the head has fewer than 2 classes or two classes with identical weight vectors."""
    c = head.weight.shape[0]
    if c < 2:
        raise OODLensError(f"{method} needs a head with at least 2 classes, got {c}")
    distinct = torch.unique(head.weight, dim=0).shape[0]
    if distinct < c:
        raise OODLensError(f"{method}: the head has {c - distinct} duplicated weight row(s), so some decision "
                           "boundaries do not exist; remove duplicated classes from the head")


def boundary_norms(head: Head) -> torch.Tensor:
    """(C, C) table of ‖w_i − w_c‖ in float64 by the expansion ‖w_i‖² + ‖w_c‖² − 2 w_i·w_c, with 1 on the
    diagonal (so the c = ŷ term of the boundary sum is 0 / 1 = 0)."""
    w = head.weight.to(torch.float64)
    w_sq = (w * w).sum(1)
    sq = (w_sq[:, None] + w_sq[None, :] - 2.0 * (w @ w.T)).clamp_min_(0)
    return sq.sqrt_().fill_diagonal_(1.0)


def boundary_distances(z: torch.Tensor, head: Head, block: int = _BLOCK) -> torch.Tensor:
    """Mean distance (N,) from each row of ``z`` to the C−1 decision boundaries of its predicted class, in the
    precision of ``z``, in row blocks that reuse two (rows × C) work buffers."""
    like = {"dtype": z.dtype, "device": z.device}
    w, b = head.weight.to(**like), head.bias.to(**like)
    norms = boundary_norms(head).to(**like)
    n, c = z.shape[0], w.shape[0]
    rows = rows_within(n, max(z.shape[1], c), block)
    gap_buf, norm_buf = torch.empty(rows, c, **like), torch.empty(rows, c, **like)
    out = torch.empty(n, **like)
    for i in range(0, n, rows):
        r = min(rows, n - i)
        logits = torch.addmm(b, z[i:i + r], w.T, out=gap_buf[:r])
        top, pred = logits.max(1, keepdim=True)
        gaps = torch.sub(top, logits, out=logits)           # |(w_ŷ − w_c)·z + (b_ŷ − b_c)| (top is the maximum)
        out[i:i + r] = gaps.div_(torch.index_select(norms, 0, pred[:, 0], out=norm_buf[:r])).sum(1)
    return out.div_(c - 1)


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
        self.train_mean_ = mean64(z)  # float64, block by block (no float64 copy of z)

    def _score(self, x) -> torch.Tensor:
        self._check_normalizer()
        z = as_float(x[self.features])
        db = boundary_distances(z, self.head_)
        if self.normalizer == "norm":
            return db.div_(torch.linalg.vector_norm(z, dim=1).clamp_min_(_TINY)).neg_()
        mu = self.train_mean_.to(z.device, z.dtype)
        rows = rows_within(z.shape[0], z.shape[1], _BLOCK)
        buf = torch.empty(rows, z.shape[1], dtype=z.dtype, device=z.device)
        dist = torch.empty_like(db)
        for i in range(0, z.shape[0], rows):
            r = min(rows, z.shape[0] - i)
            dist[i:i + r] = torch.linalg.vector_norm(torch.sub(z[i:i + r], mu, out=buf[:r]), dim=1)
        return db.div_(dist.clamp_min_(_TINY)).neg_()
