"""NNGuide (Park, Jung & Teoh, ICCV 2023, "Nearest Neighbor Guidance for Out-of-Distribution Detection").

A classifier confidence guided by how close the sample lies to the training data, where each training neighbour
is weighted by its own confidence:

    ẑ = z / ‖z‖,    conf(x) = log Σ_c exp f_c(x)                       (energy score, higher = more ID)
    bank  = { ẑ_j · conf(x_j) : j in a random subset of the training set of size ⌊ρ·N⌋ }
    guidance(x) = (1/k) Σ_{b in top-k of bank by ẑ·b} ẑ · b             (mean of the k largest inner products)
    score(x) = − conf(x) · guidance(x)

The paper's score (higher = more ID) is negated so that higher means more OOD.

Defaults follow the official code (github.com/roomo7time/nnguide): ``k = 10`` (configs/detector/nnguide.yaml)
and a bank of ``bank_ratio = 0.01`` of the training set drawn uniformly at random (``bankset_ratio=0.01`` in
dataloaders/datasets_large.py); OpenOOD's port uses k = 100 with the same 1 % ratio. Features are L2-normalised
with ``F.normalize`` as in the reference's feature extractor; the search is exact inner product (the reference uses
faiss ``IndexFlatIP``), run in chunks so the (N_test × N_bank) matrix is never formed.

Deliberate difference: on small training sets ⌊ρ·N⌋ can be smaller than k, where the reference would fail; the
bank then holds ``min(N, k)`` samples instead (and fewer than k training samples raises an error). The subset is
drawn with ``seed`` and is reproducible.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._neighbours import l2_normalise, topk_inner
from .base import Detector


def energy_confidence(logits: torch.Tensor) -> torch.Tensor:
    """``log Σ_c exp f_c`` per row (higher = more ID)."""
    return torch.logsumexp(logits, dim=1)


class NNGuide(Detector):
    name = "nnguide"
    param_grid = {"k": [1, 10, 100]}

    def __init__(self, k: int = 10, bank_ratio: float = 0.01, seed: int = 0, features: str = "features",
                 logits: str = "logits"):
        self.k = k
        self.bank_ratio = bank_ratio
        self.seed = seed
        self.features = features
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.features, self.logits)

    def _fit(self, train, labels, head, model) -> None:
        k = int(self.k)
        if k < 1:
            raise OODLensError(f"k must be >= 1, got {self.k}")
        if not 0 < float(self.bank_ratio) <= 1:
            raise OODLensError(f"bank_ratio must be in (0, 1], got {self.bank_ratio}")
        n = train.n
        if n < k:
            raise OODLensError(f"NNGuide with k={k} needs at least {k} training samples, got {n}")
        size = max(int(n * float(self.bank_ratio)), k)
        g = torch.Generator().manual_seed(int(self.seed))
        idx = torch.randperm(n, generator=g)[:size].to(train[self.features].device)
        z = as_float(train[self.features])[idx]
        conf = energy_confidence(as_float(train[self.logits])[idx])
        self.bank_ = (l2_normalise(z) * conf[:, None]).to(torch.float32)

    def _score(self, x) -> torch.Tensor:
        z = l2_normalise(as_float(x[self.features]))
        conf = energy_confidence(as_float(x[self.logits]).to(z.dtype))
        guidance = topk_inner(z, self.bank_, int(self.k)).mean(1)
        return -(conf * guidance)
