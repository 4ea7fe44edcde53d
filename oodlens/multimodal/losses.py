"""Training losses of MultiOOD (Dong, Zhao, Chatzi, Fink, NeurIPS 2024, "MultiOOD: Scaling Out-of-Distribution
Detection for Multiple Modalities"): Agree-to-Disagree (A2D) and the two terms applied to synthesised outliers.

With M ≥ 2 modalities, per-modality logits ``l_m`` (N, C) and labels ``y``:

* A2D (Eq. in the paper's §4.1; ``train_video_flow.py`` with ``--use_a2d``)::

      q_m = softmax(l_m with column y removed)                 (N, C−1): the classes other than the ground truth
      L_A2D = − mean_{m<m'} D(q_m, q_m')                       added to the loss as  a2d_ratio · L_A2D

  so minimising it *enlarges* the modalities' disagreement on the non-ground-truth classes of ID data (they
  must still agree on the ground truth through cross-entropy).

* on synthesised outliers (NP-Mix or Feature Mixing), with ``p_m = softmax(l_m)`` over **all** classes::

      L_disc = − mean_{m<m'} D(p_m, p_m')                      weight a2d_ratio_ood
      L_ent  = − mean_m mean_i H(p_m,i) / log C                weight ood_entropy_ratio

  (maximise the modalities' disagreement and the normalised prediction entropy on outliers; the reference's
  ``normalized_prediction_entropy`` with ``log(p + 1e-9)``).

``D`` is, as in the reference's ``--a2d_max_*`` / ``--max_ood_*`` switches:

* ``"hellinger"``: per sample ``sqrt(Σ_c (√p_c − √q_c)²) / √2`` with ``p, q`` clamped to ≥ 1e-6, then the batch
  mean (``hellinger_distance``);
* ``"l1"``: ``mean |p − q|`` over every element (``nn.L1Loss()``);
* ``"l2"``: ``mean (p − q)²`` over every element (``nn.MSELoss()``).

For more than two modalities the distance is averaged over all pairs, as the reference's three-modality script
(``train_video_flow_audio.py``) does. The reference's Wasserstein variant is not provided.

Deliberate difference: where two distributions are identical the Hellinger square root has an infinite
derivative (the reference would produce NaN gradients there); here its gradient is taken as 0 at that point.
The value is unchanged. Everything is vectorised: the ground-truth column is removed with one boolean mask
instead of the reference's per-sample loop.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Sequence

import torch

from ..errors import OODLensError

#: the discrepancy measures of MultiOOD's released code that are implemented here
DISTANCES = ("hellinger", "l1", "l2")

_CLAMP = 1e-6  # hellinger_distance's clamp in the reference
_LOG_EPS = 1e-9  # normalized_prediction_entropy's epsilon in the reference


def _safe_sqrt(s: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (instead of infinite) gradient at 0."""
    pos = s > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, s, torch.ones_like(s))), torch.zeros_like(s))


def hellinger(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-row Hellinger distance (N,) between probability rows, after clamping both to ≥ 1e-6."""
    if p.shape != q.shape:
        raise OODLensError(f"hellinger: probability rows differ in shape, {tuple(p.shape)} vs {tuple(q.shape)}")
    p, q = p.clamp_min(_CLAMP), q.clamp_min(_CLAMP)
    return _safe_sqrt(((p.sqrt() - q.sqrt()) ** 2).sum(-1)) / math.sqrt(2.0)


def distance(p: torch.Tensor, q: torch.Tensor, kind: str = "hellinger") -> torch.Tensor:
    """Scalar discrepancy between two (N, K) probability matrices, averaged as in the reference."""
    if p.shape != q.shape:
        raise OODLensError(f"distance: probability matrices differ in shape, {tuple(p.shape)} vs {tuple(q.shape)}")
    if kind == "hellinger":
        return hellinger(p, q).mean()
    if kind == "l1":
        return (p - q).abs().mean()
    if kind == "l2":
        return ((p - q) ** 2).mean()
    raise OODLensError(f"unknown discrepancy {kind!r}; choose one of {', '.join(DISTANCES)}")


def pairwise_discrepancy(probs: Sequence[torch.Tensor], kind: str = "hellinger") -> torch.Tensor:
    """Mean of :func:`distance` over every pair of modalities (one pair for two modalities)."""
    if len(probs) < 2:
        raise OODLensError(f"a discrepancy needs at least 2 modalities, got {len(probs)}")
    pairs = list(combinations(range(len(probs)), 2))
    return torch.stack([distance(probs[i], probs[j], kind) for i, j in pairs]).mean()


def drop_ground_truth(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, C) logits without each row's ground-truth column: (N, C − 1), other columns in their order."""
    n, c = logits.shape
    if c < 2:
        raise OODLensError("A2D needs at least 2 classes")
    if labels.shape != (n,):
        raise OODLensError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    keep = torch.ones(n, c, dtype=torch.bool, device=logits.device)
    keep[torch.arange(n, device=logits.device), labels.to(logits.device)] = False
    return logits[keep].view(n, c - 1)


def a2d_loss(logits: Sequence[torch.Tensor], labels: torch.Tensor, kind: str = "hellinger") -> torch.Tensor:
    """Agree-to-Disagree: − mean pairwise discrepancy of the modalities' softmax over the non-ground-truth
    classes. Add it to the loss with weight ``a2d_ratio`` (0.5 by default in the reference's argparse)."""
    probs = [torch.softmax(drop_ground_truth(l, labels), dim=1) for l in logits]
    return -pairwise_discrepancy(probs, kind)


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row prediction entropy divided by log C (N,): ``−Σ p log(p + 1e-9) / log C``."""
    c = logits.shape[-1]
    if c < 2:
        raise OODLensError("normalised entropy needs at least 2 classes")
    p = torch.softmax(logits, dim=-1)
    return -(p * torch.log(p + _LOG_EPS)).sum(-1) / math.log(c)


def outlier_discrepancy_loss(logits: Sequence[torch.Tensor], kind: str = "hellinger") -> torch.Tensor:
    """− mean pairwise discrepancy of the modalities' softmax over all classes, on synthesised outliers."""
    return -pairwise_discrepancy([torch.softmax(l, dim=1) for l in logits], kind)


def outlier_entropy_loss(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """− mean over modalities of the mean normalised entropy, on synthesised outliers."""
    return -torch.stack([normalized_entropy(l).mean() for l in logits]).mean()
