"""Batch screening: which inputs of a batch to flag as OOD while controlling the false discovery rate.

* **Benjamini–Hochberg** (JRSS-B 1995) at level α on ``m`` p-values: with ``p_(1) ≤ … ≤ p_(m)``, let
  ``k = max{j : p_(j) ≤ α j / m}`` and flag every ``p ≤ α k / m`` (nothing when no such j).
  Marginal conformal p-values sharing one calibration set are dependent but PRDS (Bates et al., "Testing for
  outliers with conformal p-values", Annals of Statistics 2023), so BH on them keeps
  ``FDR = E[#false flags / max(#flags, 1)] ≤ α · m₀/m ≤ α``.
* **Storey-BH** (Storey, Taylor & Siegmund, JRSS-B 2004): estimate the null fraction
  ``π̂₀ = (1 + #{p_j > λ}) / (m (1 − λ))`` (λ = 0.5 by default, the usual choice), clipped to 1,
  and run BH at α / π̂₀ — more flags when many inputs are OOD. With conformal p-values its FDR control is shown
  by Marandon, Lei, Mary & Roquain ("Adaptive novelty detection with false discovery rate guarantee", Annals
  of Statistics 2024); the simulation test checks it too.

Functions accept p-values of shape (m,) or (..., m) (one batch per leading index, to vectorise simulations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import OODLensError
from .._checks import as_scores, as_tensor

SCREENING_METHODS = ("bh", "storey")


@dataclass(frozen=True)
class Screening:
    """Result of a screening: ``rejected`` (bool, same shape as the p-values: True = flagged as OOD), the p-value
    cut-off used (flag ``p ≤ cutoff``), the nominal ``alpha`` and the null-fraction estimate ``pi0`` (1 for BH)."""

    rejected: torch.Tensor
    cutoff: torch.Tensor
    alpha: float
    method: str
    pi0: torch.Tensor

    @property
    def n_rejected(self) -> int | torch.Tensor:
        r = self.rejected.sum(-1)
        return int(r) if r.ndim == 0 else r


def _check(pvalues: Any, alpha: float) -> torch.Tensor:
    p = as_scores(pvalues, "p-values", batched=True)
    if p.shape[-1] == 0:
        raise OODLensError("cannot screen an empty batch")
    if bool(((p < 0) | (p > 1)).any()):
        raise OODLensError("p-values must lie in [0, 1]")
    if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0):
        raise OODLensError(f"FDR level alpha must be in (0, 1), got {alpha!r}")
    return p


def _bh(p: torch.Tensor, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BH step-up with a per-batch level (shape = leading dims): (rejected mask, cut-off)."""
    m = p.shape[-1]
    ranks = torch.arange(1, m + 1, dtype=p.dtype, device=p.device)
    below = p.sort(-1).values <= level[..., None] * ranks / m
    k = torch.where(below, ranks, torch.zeros_like(ranks)).amax(-1)
    cutoff = level * k / m
    return p <= cutoff[..., None], cutoff


def benjamini_hochberg(pvalues: Any, alpha: float = 0.1) -> Screening:
    """Benjamini–Hochberg at FDR level ``alpha`` (see the module docstring)."""
    p = _check(pvalues, alpha)
    level = torch.full(p.shape[:-1], float(alpha), dtype=p.dtype, device=p.device)
    rejected, cutoff = _bh(p, level)
    return Screening(rejected, cutoff, float(alpha), "bh", torch.ones_like(level))


def storey_bh(pvalues: Any, alpha: float = 0.1, lam: float = 0.5) -> Screening:
    """Storey's π₀-adaptive BH: BH at ``alpha / π̂₀`` with ``π̂₀ = min(1, (1 + #{p > λ}) / (m (1 − λ)))``."""
    p = _check(pvalues, alpha)
    if not 0.0 < lam < 1.0:
        raise OODLensError(f"Storey's lambda must be in (0, 1), got {lam}")
    m = p.shape[-1]
    pi0 = ((1.0 + (p > lam).sum(-1).to(p.dtype)) / (m * (1.0 - lam))).clamp_max(1.0)
    rejected, cutoff = _bh(p, float(alpha) / pi0)
    return Screening(rejected, cutoff, float(alpha), "storey", pi0)


def screen(pvalues: Any, alpha: float = 0.1, method: str = "bh", lam: float = 0.5) -> Screening:
    """``benjamini_hochberg`` (method='bh') or ``storey_bh`` (method='storey')."""
    if method == "bh":
        return benjamini_hochberg(pvalues, alpha)
    if method == "storey":
        return storey_bh(pvalues, alpha, lam)
    raise OODLensError(f"unknown screening method {method!r}; use one of {', '.join(SCREENING_METHODS)}")


def _mask(x: Any, name: str) -> torch.Tensor:
    """A boolean tensor from booleans or 0/1 values (anything else is refused)."""
    t = as_tensor(x, name)
    if t.dtype != torch.bool:
        if t.is_complex() or not bool(((t == 0) | (t == 1)).all()):
            raise OODLensError(f"{name} must be boolean (or 0/1)")
        t = t != 0
    return t


def false_discovery_proportion(rejected: Any, is_ood: Any) -> torch.Tensor | float:
    """#(flagged ID) / max(#flagged, 1), per batch (last dimension)."""
    r, o = _mask(rejected, "rejected"), _mask(is_ood, "is_ood").to(_mask(rejected, "rejected").device)
    if o.shape != r.shape:
        try:
            o = o.expand_as(r)
        except RuntimeError:
            raise OODLensError(f"is_ood {tuple(o.shape)} does not match rejected {tuple(r.shape)}") from None
    fdp = (r & ~o).sum(-1).double() / r.sum(-1).clamp_min(1).double()
    return float(fdp) if fdp.ndim == 0 else fdp
