"""RankFeat (Song, Sebe & Wang, NeurIPS 2022, "RankFeat: Rank-1 Feature Removal for Out-of-distribution
Detection"), on the last feature map and the classifier head ("Block 4" variant).

For each sample, X = the feature map reshaped to C × HW, with largest singular value σ₁ and singular vectors
u₁ (C), v₁ (HW):

    X' = X − σ₁ u₁ v₁ᵀ                              (remove the rank-1 component)
    score(x) = − log Σ_c exp((W pool(X') + b)_c)   (energy of the recomputed logits, T = 1)

pool is the global spatial average. The reference code (KingJamesSong/RankFeat; OpenOOD's ``RankFeatPostprocessor``)
computes the same with ``torch.linalg.svd`` (its power-iteration option is an approximation of it) and returns
T·logsumexp(logits / T), T = 1, as an ID score; we return its negation, so higher = more OOD. Here the rank-1 term
is computed to float64 precision from the top eigenvector of the smaller of XᵀX and XXᵀ, found by repeated squaring
run to convergence (batched matrix products; a batched SVD of X or ``eigh`` of many small matrices is an order of
magnitude slower on a GPU). Differences: only the Block-4 variant (the reference's default fuses it with a Block-3
variant that needs the model to run layer 4 again); and "pool then head" assumes nothing non-linear sits between the
map and the pooling (true for torchvision ResNets; for BiT-style networks with a norm + ReLU before the head, pass
the map after them). If σ₁ = σ₂ the rank-1 component is not unique (as in the reference).

Default feature: ``layer4`` (torchvision ResNet naming; extract it with ``pool="none"``).
"""

from __future__ import annotations

import torch

from ..errors import OODLensError
from ._shaping import ShapedEnergy


def top_eigenvector(a: torch.Tensor, max_squarings: int = 64) -> torch.Tensor:
    """Unit leading eigenvector (N, m, 1) of each symmetric PSD matrix in ``a`` (N, m, m), float64.

    Repeated squaring with trace normalisation, B ← B² / tr(B²), drives B to the projector v₁v₁ᵀ at the rate
    (λ₂/λ₁)^(2^k); it stops when B no longer changes (within 64 squarings any gap above float64 resolution has
    converged). v₁ is then read from B's largest column and polished by one multiplication with ``a``. All batched
    matrix products: batched ``eigh`` of many small matrices is far slower on GPUs.
    """
    tiny = torch.finfo(torch.float64).tiny

    def normalised(m: torch.Tensor) -> torch.Tensor:
        return m / m.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(tiny)[:, None, None]

    b = normalised(a)
    for _ in range(max_squarings):
        nb = normalised(b @ b)
        converged = bool(((nb - b).abs().amax() <= 1e-15).item()) if nb.numel() else True
        b = nb
        if converged:
            break
    j = b.diagonal(dim1=1, dim2=2).argmax(-1)
    v = b.gather(2, j[:, None, None].expand(-1, b.shape[1], 1))
    v = a @ (v / v.norm(dim=1, keepdim=True).clamp_min(tiny))
    return v / v.norm(dim=1, keepdim=True).clamp_min(tiny)


def remove_rank1(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) with each sample's leading singular component (as a C × HW matrix X) removed.

    σ₁u₁v₁ᵀ = X v₁v₁ᵀ = u₁u₁ᵀ X, so only the top eigenvector of the smaller Gram matrix (XᵀX, HW × HW, or XXᵀ,
    C × C) is needed, computed in float64.
    """
    x = maps.flatten(2).to(torch.float64)
    if x.shape[2] <= x.shape[1]:
        v = top_eigenvector(x.transpose(1, 2) @ x)  # (N, HW, 1)
        top = (x @ v) @ v.transpose(1, 2)
    else:
        u = top_eigenvector(x @ x.transpose(1, 2))  # (N, C, 1)
        top = u @ (u.transpose(1, 2) @ x)
    return (x - top).to(maps.dtype).view_as(maps)


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
