"""Relation / neural relation graph (Kim, Yun & Song, NeurIPS 2023, "Neural Relation Graph: A Unified Framework
for Identifying Label Noise and Outlier Data").

Each test sample is connected to every training sample by an edge whose weight combines feature similarity and
prediction compatibility; an in-distribution sample has many strong edges:

    ẑ = z / sqrt(‖z‖² + 1e-10),   p = softmax(f(x))
    r(x, j) = max(0, ẑ · ẑ_j) · (p · p_j)                       (kernel "cos_p")
    score(x) = − Σ_j  r(x, j)^t · [r(x, j) > τ]

The reference's OOD score is ``1 / (Σ_j … + 1e-6)``; since the sum is non-negative, ``−Σ_j …`` ranks every
sample identically (a strictly decreasing map of the same sum) and is what OpenOOD's port returns, negated.

Defaults follow the official code (github.com/snu-mllab/Neural-Relation-Graph, relation.py / detect_ood.py):
edge threshold τ = 0.03, kernel ``cos_p``, the whole training set as the bank (``hop = 1``; ``hop = h`` keeps
every h-th training sample, the reference's ``--hop``), and power t = 1 — the reference warns that t ≠ 1 "is not
optimal for OOD detection", and OpenOOD uses ``pow: 1`` with the sweep [1, 2, 4, 6, 8] used as ``param_grid``
here. Normalisation adds 1e-10 under the root (as OpenOOD's port) so that a zero feature vector stays finite.
The sum runs block by block (``_neighbours.sum_over_bank``); the (N_test × N_train) matrix is never formed.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._neighbours import l2_normalise, sum_over_bank
from .base import Detector

_NORM_EPS = 1e-10


class Relation(Detector):
    name = "relation"
    param_grid = {"power": [1, 2, 4, 6, 8]}
    score_only_params = frozenset({"power", "threshold"})

    def __init__(self, power: float = 1, threshold: float = 0.03, hop: int = 1, features: str = "features",
                 logits: str = "logits"):
        self.power = power
        self.threshold = threshold
        self.hop = hop
        self.features = features
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.features, self.logits)

    def _fit(self, train, labels, head, model) -> None:
        if int(self.hop) < 1:
            raise OODLensError(f"hop must be >= 1, got {self.hop}")
        self._check_params()
        keep = slice(None, None, int(self.hop))
        self.bank_features_ = l2_normalise(as_float(train[self.features])[keep], _NORM_EPS).to(torch.float32)
        self.bank_probs_ = torch.softmax(as_float(train[self.logits])[keep], dim=1).to(torch.float32)

    def _check_params(self) -> None:
        if float(self.power) <= 0:
            raise OODLensError(f"power must be > 0, got {self.power}")
        if float(self.threshold) < 0:
            raise OODLensError(f"threshold must be >= 0 (edges are non-negative), got {self.threshold}")

    def _score(self, x) -> torch.Tensor:
        self._check_params()
        z = l2_normalise(as_float(x[self.features]), _NORM_EPS)
        p = torch.softmax(as_float(x[self.logits]).to(z.dtype), dim=1)
        bank_z, bank_p = self.bank_features_.to(z.dtype), self.bank_probs_.to(z.dtype)
        power, thres = float(self.power), float(self.threshold)

        def edges(rows: slice, cols: slice) -> torch.Tensor:
            rel = (z[rows] @ bank_z[cols].T).clamp_min_(0).mul_(p[rows] @ bank_p[cols].T)  # in place: 2 blocks
            rel.mul_(rel > thres)  # edges at or below τ are dropped
            return rel if power == 1 else rel.pow_(power)

        return -sum_over_bank(z, bank_z, edges)
