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

Memory: only the pooled result is needed, and pool(X − σ₁u₁v₁ᵀ) = mean_HW(X) − σ₁u₁·mean(v₁), so no shaped copy
of the maps is made; samples are processed in float64 row blocks of ``_BLOCK`` numbers.

Default feature: ``layer4`` (torchvision ResNet naming; extract it with ``pool="none"``).
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._gaussian import block_rows
from ._shaping import ShapedEnergy, head_energy

#: numbers per float64 row block of maps (and their small Gram matrices) when scoring: 8 MiB
_BLOCK = 1 << 20


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


def pooled_without_rank1(maps: torch.Tensor, budget: int | None = None) -> torch.Tensor:
    """pool(X − σ₁u₁v₁ᵀ) per sample, (N, C) in the maps' dtype, for maps (N, C, *spatial) with X = C × HW.

    σ₁u₁v₁ᵀ = X v₁v₁ᵀ = u₁u₁ᵀ X, so only the top eigenvector of the smaller Gram matrix (XᵀX, HW × HW, or XXᵀ,
    C × C) is needed, and the pooled result follows without forming X − σ₁u₁v₁ᵀ:
    mean_HW(X) − (X v₁)·mean(v₁), or mean_HW(X) − u₁ (u₁ᵀ mean_HW(X)). Computed in float64 over row blocks of
    about ``budget`` numbers (default ``_BLOCK``), so memory stays a small fraction of the maps.
    """
    n, c = maps.shape[:2]
    flat = maps.reshape(n, c, -1)
    hw = flat.shape[2]
    m = min(c, hw)
    rows = block_rows(n, c * hw + 4 * m * m, _BLOCK if budget is None else budget)
    out = torch.empty(n, c, dtype=maps.dtype, device=maps.device)
    for i in range(0, n, rows):
        x = flat[i:i + rows].to(torch.float64)
        mean = x.mean(2)
        if hw <= c:
            v = top_eigenvector(x.transpose(1, 2) @ x)                       # (r, HW, 1)
            mean -= (x @ v)[:, :, 0] * v.mean(1)
        else:
            u = top_eigenvector(x @ x.transpose(1, 2))                       # (r, C, 1)
            mean -= u[:, :, 0] * (mean[:, None, :] @ u)[:, 0]
        out[i:i + rows] = mean
    return out


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

    def _score(self, x) -> torch.Tensor:
        return head_energy(pooled_without_rank1(as_float(x[self.features])), self.head_)
