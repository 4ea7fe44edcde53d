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
1e-12 so a feature exactly at the mean stays finite. Scored in the input precision (float64 features give
float64 scores; float32 and float16 give float32), in row blocks that reuse three work buffers, so memory stays
bounded and no N×D copy is made; μ_G is accumulated in float64 over row blocks at fit (no float64 copy either).
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._blocks import rows_within
from ._gaussian import mean64
from .base import Detector

_TINY = 1e-12
#: numbers per (rows × D) work buffer when scoring in row blocks
_BLOCK = 1 << 22


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
        self.train_mean_ = mean64(z)  # float64, block by block (no float64 copy of z)

    def _score(self, x) -> torch.Tensor:
        z = as_float(x[self.features])
        like = {"dtype": z.dtype, "device": z.device}
        w, b, mu = self.head_.weight.to(**like), self.head_.bias.to(**like), self.train_mean_.to(**like)
        n, d = z.shape
        rows = rows_within(n, max(d, w.shape[0]), _BLOCK)
        logits, centred, w_pred = torch.empty(rows, w.shape[0], **like), torch.empty(rows, d, **like), torch.empty(rows, d, **like)
        out = torch.empty(n, **like)
        for i in range(0, n, rows):
            r = min(rows, n - i)
            zi, c, wp = z[i:i + r], centred[:r], w_pred[:r]
            pred = torch.addmm(b, zi, w.T, out=logits[:r]).argmax(1)
            torch.sub(zi, mu, out=c)
            norm = torch.linalg.vector_norm(c, dim=1).clamp_min_(_TINY)
            l1 = torch.abs(zi, out=wp).sum(1)
            p_score = torch.index_select(w, 0, pred, out=wp).mul_(c).sum(1).div_(norm)
            out[i:i + r] = p_score.add_(l1, alpha=float(self.alpha)).neg_()
        return out
