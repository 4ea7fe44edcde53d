"""Similarity logits between embeddings and prompt embeddings, the input of every zero-shot score:

    s_k(x) = cos(x, t_k) = x·t_k / (‖x‖ ‖t_k‖)

``similarity_logits`` adds them to a :class:`~oodlens.Features` as ``logits`` (divided by a temperature), so the
registered logit detectors (``energy``, ``maxlogit``, ``msp``, ...) run on them unchanged — the Energy and
MaxLogit rows of MCM's reference code.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._checks import as_float, check_finite
from ..errors import OODLensError
from ..features import Features


def unit(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows (last dimension) scaled to unit L2 norm (zero rows stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def cosine(x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """(..., D) × (K, D) → (..., K) cosine similarities."""
    if x.shape[-1] != prompts.shape[-1]:
        raise OODLensError(f"embeddings have width {x.shape[-1]} but the prompts {prompts.shape[-1]}: "
                           "use the same model's image/text (or sentence) embeddings")
    return unit(x) @ unit(prompts.to(x.device, x.dtype)).T


def similarity_logits(features: Features, prompts: Any, name: str = "features", temperature: float = 1.0,
                      out: str = "logits") -> Features:
    """``features`` plus ``out`` = cos(features[name], prompts) / temperature, (N, K)."""
    if not isinstance(features, Features):
        raise OODLensError(f"features must be oodlens.Features (e.g. Features(features=x)), got "
                           f"{type(features).__name__}")
    try:
        tau = float(temperature) if not isinstance(temperature, (bool, str)) else math.nan
    except (TypeError, ValueError):
        tau = math.nan
    if not (math.isfinite(tau) and tau > 0):
        raise OODLensError(f"temperature must be a finite number > 0, got {temperature!r}")
    p = check_finite(as_float(prompts, "prompts"), "prompts")
    if p.ndim != 2:
        raise OODLensError(f"prompts must be (K, D), got shape {tuple(p.shape)}")
    return features.merge({out: cosine(as_float(features[name], name), p) / tau})
