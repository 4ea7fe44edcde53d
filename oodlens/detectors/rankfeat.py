"""RankFeat (Song, Sebe & Wang, NeurIPS 2022, "RankFeat: Rank-1 Feature Removal for Out-of-distribution
Detection"), on the last feature map and the classifier head ("Block 4" variant).

For each sample, X = the feature map reshaped to C × HW, with largest singular value σ₁ and singular vectors
u₁ (C), v₁ (HW):

    X' = X − σ₁ u₁ v₁ᵀ                              (remove the rank-1 component)
    score(x) = − log Σ_c exp((W pool(X') + b)_c)   (energy of the recomputed logits, T = 1)

pool is the global spatial average. The reference code (KingJamesSong/RankFeat; OpenOOD's
``RankFeatPostprocessor``) computes the same with ``torch.linalg.svd`` (its power-iteration option is an
approximation of it) and returns T·logsumexp(logits / T), T = 1, as an ID score; we return its negation, so
higher = more OOD. Here the SVD is exact and batched. Differences: only the Block-4 variant (the reference's
default fuses it with a Block-3 variant that needs the model to run layer 4 again); and "pool then head" assumes
nothing non-linear sits between the map and the pooling (true for torchvision ResNets; for BiT-style networks
with a norm + ReLU before the head, pass the map after them). If σ₁ = σ₂ the rank-1 component is not unique
(as in the reference).

Default feature: ``layer4`` (torchvision ResNet naming; extract it with ``pool="none"``).
"""

from __future__ import annotations

import torch

from ..errors import OODLensError
from ._shaping import ShapedEnergy


def remove_rank1(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) with each sample's leading singular component (as a C × HW matrix) removed."""
    flat = maps.flatten(2)
    u, s, vh = torch.linalg.svd(flat, full_matrices=False)
    top = s[:, :1, None] * (u[:, :, :1] @ vh[:, :1, :])
    return (flat - top).view_as(maps)


class RankFeat(ShapedEnergy):
    name = "rankfeat"
    spatial_inputs = True
    test_params = {"features": "block2_map"}

    def __init__(self, features: str = "layer4"):
        self.features = features

    def _fit_shaping(self, z: torch.Tensor) -> None:
        if z.ndim < 3:
            raise OODLensError(f"RankFeat needs a spatial feature map (N, C, H, W) for {self.features!r}, got shape "
                               f"{tuple(z.shape)}; extract the layer with pool='none'")

    def _shape(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return remove_rank1(z), None
