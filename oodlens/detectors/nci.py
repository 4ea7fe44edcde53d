"""NCI (Liu & Qin, CVPR 2025, "Detecting Out-of-Distribution through the Lens of Neural Collapse").

Under neural collapse, ID features centred on the global training mean point along their predicted class's
classifier weight vector, and lie away from the origin:

    ŷ = argmax_c f_c(z),   μ_G = mean training feature
    pScore(z) = w_ŷ · (z − μ_G) / ‖z − μ_G‖₂                (projection of the *unit* centred feature on w_ŷ)
    score(z)  = − ( pScore(z) + α · ‖z‖₁ )

The paper's score (higher = more ID) is negated so that higher means more OOD. Exactly what the reference code
computes (the official repo github.com/litianliu/NCI-OOD ships it as OpenOOD's nci_postprocessor): note that
pScore is divided by ‖z − μ_G‖ only, not by ‖w_ŷ‖ — it is a projection, not a cosine — and the norm term uses the
raw (uncentred) feature's L1 norm. Default α = 1e-4 and the sweep [1e-4, 1e-3, 1e-2, 0.1] (``param_grid``) come
from OpenOOD's configs/postprocessors/nci.yml, where α is chosen on validation data. ‖z − μ_G‖ is clamped at
1e-12 so a feature exactly at the mean stays finite.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from .base import Detector

_TINY = 1e-12


class NCI(Detector):
    name = "nci"
    needs_head = True
    param_grid = {"alpha": [1e-4, 1e-3, 1e-2, 1e-1]}
    score_only_params = frozenset({"alpha"})

    def __init__(self, alpha: float = 1e-4, features: str = "features"):
        self.alpha = alpha
        self.features = features

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    def _fit(self, train, labels, head, model) -> None:
        z = as_float(train[self.features])
        if z.shape[1] != head.weight.shape[1]:
            raise OODLensError(f"feature {self.features!r} has D={z.shape[1]} but the head expects D={head.weight.shape[1]}")
        self.head_ = head
        self.train_mean_ = z.to(torch.float64).mean(0)

    def _score(self, x) -> torch.Tensor:
        z = as_float(x[self.features])
        z64 = z.to(torch.float64)
        w = self.head_.weight.to(z.device, torch.float64)
        pred = torch.addmm(self.head_.bias.to(z.device, torch.float64), z64, w.T).argmax(1)
        centred = z64 - self.train_mean_.to(z.device)
        p_score = (w[pred] * centred).sum(1) / centred.norm(dim=1).clamp_min(_TINY)
        return (-(p_score + float(self.alpha) * z64.abs().sum(1))).to(z.dtype)
