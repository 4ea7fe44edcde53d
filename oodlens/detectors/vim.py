"""ViM: Virtual-logit Matching (Wang, Li, Feng & Zhang, CVPR 2022, "ViM: Out-Of-Distribution with Virtual-logit
Matching"), on penultimate features and the classifier head.

    u = −W⁺ b,   R = complement of the top-``dim`` principal subspace of z − u (see ``_principal.py``)
    f(z) = W z + b                                              (logits, recomputed from the head)
    α = mean_i max_c f_c(z_i) / mean_i ‖(z_i − u) R‖            (training features)
    v(z) = α ‖(z − u) R‖                                        (the virtual logit)
    score(x) = v(z) − log Σ_c exp f_c(z)

This is exactly the negation of the reference code's confidence ``−vlogit + logsumexp(logits)``
(haoqiwang/vim ``benchmark.py``; OpenOOD's ``VIMPostprocessor``), so higher = more OOD. The paper states the score
as the softmax probability of the virtual logit, e^v / (e^v + Σ_c e^{f_c}) = σ(score): a monotone map of ours, so
every ranking metric is the same; we keep the reference's unsquashed form, which does not saturate at 0 or 1.

Defaults: ``dim=None`` applies the paper's rule — 1000 if D ≥ 2048, 512 if D ≥ 768, else D // 2. The logits are
recomputed from the head rather than read from a ``logits`` feature, as in the reference (which computes
``feature @ W.T + b``), so the virtual and real logits always come from the same features.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._principal import residual_norm
from .base import Head
from .residual import Residual


class ViM(Residual):  # Residual's principal subspace and origin, plus the head's logits and α
    name = "vim"

    def _fit(self, train, labels, head, model) -> None:
        super()._fit(train, labels, head, model)  # dim_, origin_, basis_ and the head (fit_from_stats)
        self.fit_alpha(self.alpha_sums(as_float(train[self.features])))

    def fit_from_stats(self, stats, head) -> "ViM":
        """Residual's fit from statistics plus the head; α needs a second pass: ``fit_alpha(Σ alpha_sums)``."""
        super().fit_from_stats(stats, head)
        head = Head.coerce(head)
        self.head_weight_ = head.weight.to(self.origin_.device, torch.float64)
        self.head_bias_ = head.bias.to(self.origin_.device, torch.float64)
        return self

    def alpha_sums(self, z: torch.Tensor) -> torch.Tensor:
        """[Σ max_c f_c(z_i), Σ ‖(z_i − u) R‖, Σ ‖z_i − u‖, N] over the rows ``z`` (float64; shards add up)."""
        sums = torch.zeros(4, dtype=torch.float64)
        for i in range(0, z.shape[0], 8192):  # float64 means, one block of rows at a time (bounded memory)
            z64 = z[i:i + 8192].to(self.origin_.device, torch.float64)
            sums[0] += float(torch.addmm(self.head_bias_, z64, self.head_weight_.T).amax(1).sum())
            sums[1] += float(residual_norm(z64, self.origin_, self.basis_).sum())
            sums[2] += float(torch.linalg.vector_norm(z64 - self.origin_, dim=1).sum())
        sums[3] = z.shape[0]
        return sums

    def fit_alpha(self, sums: torch.Tensor) -> "ViM":
        """α = mean max logit / mean residual norm, from ``alpha_sums`` (of all rows, or added over shards)."""
        max_logit, res, size = (float(v) / float(sums[3]) for v in sums[:3])
        if not res > 1e-10 * size:
            raise OODLensError(f"ViM: the training features have no component outside the top-{self.dim_} principal "
                               "subspace (mean residual norm is ~0), so the virtual logit's scale α is undefined; "
                               "lower dim")
        self.alpha_ = float(max_logit / res)
        return self

    def _score(self, x) -> torch.Tensor:
        z = as_float(x[self.features])
        logits = torch.addmm(self.head_bias_.to(z.dtype), z, self.head_weight_.to(z.dtype).T)
        vlogit = self.alpha_ * residual_norm(z, self.origin_, self.basis_)
        return vlogit - torch.logsumexp(logits, dim=1)
