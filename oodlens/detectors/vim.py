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
from .residual import Residual


class ViM(Residual):  # Residual's principal subspace and origin, plus the head's logits and α
    name = "vim"

    def _fit(self, train, labels, head, model) -> None:
        super()._fit(train, labels, head, model)  # dim_, origin_, basis_
        z = as_float(train[self.features])
        self.head_weight_ = head.weight.to(z.device, torch.float64)
        self.head_bias_ = head.bias.to(z.device, torch.float64)
        max_logit = res = size = 0.0
        for i in range(0, z.shape[0], 8192):  # float64 means, one block of rows at a time (bounded memory)
            z64 = z[i:i + 8192].to(torch.float64)
            max_logit += float(torch.addmm(self.head_bias_, z64, self.head_weight_.T).amax(1).sum())
            res += float(residual_norm(z64, self.origin_, self.basis_).sum())
            size += float(torch.linalg.vector_norm(z64 - self.origin_, dim=1).sum())
        max_logit, res, size = max_logit / z.shape[0], res / z.shape[0], size / z.shape[0]
        if not res > 1e-10 * size:
            raise OODLensError(f"ViM: the training features have no component outside the top-{self.dim_} principal "
                               "subspace (mean residual norm is ~0), so the virtual logit's scale α is undefined; "
                               "lower dim")
        self.alpha_ = float(max_logit / res)

    def _score(self, x) -> torch.Tensor:
        z = as_float(x[self.features])
        logits = torch.addmm(self.head_bias_.to(z.dtype), z, self.head_weight_.to(z.dtype).T)
        vlogit = self.alpha_ * residual_norm(z, self.origin_, self.basis_)
        return vlogit - torch.logsumexp(logits, dim=1)
