"""Feature Mixing outlier synthesis (Liu, Dong, Kelly, Fink, Trapp, NeurIPS 2025, "Extremely Simple Multimodal
Outlier Synthesis for Out-of-Distribution Detection and Segmentation") — a cheaper alternative to NP-Mix.

For a batch of per-modality embeddings ``z_1 … z_M`` (each (N, D_m)), pick a random set S of n dimensions among
the first ``D = min_m D_m`` and exchange the values at S between the modalities of the same sample::

    two modalities:   z̃_1[:, S] = z_2[:, S],   z̃_2[:, S] = z_1[:, S],   other dimensions unchanged
    M > 2:            z̃_m[:, S] = z_{(m+1) mod M}[:, S]           (a cyclic shift; a swap when M = 2)

Each outlier keeps most of one modality's embedding but carries a block of another modality's feature values, so
it leaves the joint ID distribution while staying near it. The outliers go through the per-modality heads with
the same outlier terms as NP-Mix (discrepancy over all classes and entropy maximisation, see
:mod:`oodlens.multimodal.losses`). No queue, prototype or neighbour search is needed.

Defaults and deviations: the paper's own code was not available to check, so ``n = round(swap_fraction · D)``
with ``swap_fraction = 0.5`` is this library's choice, one random set S is drawn per step (shared by the batch),
the cyclic shift for M > 2 is this library's generalisation, and the embeddings are detached before mixing (as
NP-Mix's queued embeddings are), so the outlier terms train the heads only. Randomness comes from a seeded
``torch.Generator``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import OODLensError


def swap_dims(n_dims: int, swap_fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The random dimension indices S (sorted) for one step: ``max(1, round(swap_fraction · n_dims))`` of them."""
    if not 0.0 < swap_fraction <= 1.0:
        raise OODLensError(f"swap_fraction must be in (0, 1], got {swap_fraction}")
    n = max(1, int(round(swap_fraction * n_dims)))
    return torch.randperm(n_dims, generator=generator)[:n].sort().values


def feature_mixing(embeddings: Sequence[torch.Tensor], swap_fraction: float = 0.5,
                   generator: torch.Generator | None = None, dims: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Mixed copies of ``embeddings`` (one (N, D_m) tensor per modality, detached); ``dims`` overrides the draw."""
    if len(embeddings) < 2:
        raise OODLensError(f"Feature Mixing needs at least 2 modalities, got {len(embeddings)}")
    zs = [z.detach() for z in embeddings]
    n = zs[0].shape[0]
    if any(z.ndim != 2 or z.shape[0] != n for z in zs):
        raise OODLensError(f"Feature Mixing needs (N, D_m) embeddings with one N, got {[tuple(z.shape) for z in zs]}")
    d = min(z.shape[1] for z in zs)
    idx = swap_dims(d, swap_fraction, generator) if dims is None else torch.as_tensor(dims).long()
    idx = idx.to(zs[0].device)
    out = [z.clone() for z in zs]
    m = len(zs)
    for i in range(m):
        out[i][:, idx] = zs[(i + 1) % m][:, idx].to(out[i].dtype)
    return out
