"""VOS — Virtual Outlier Synthesis (Du, Wang, Cai, Li, ICLR 2022, "VOS: Learning What You Don't Know by Virtual
Outlier Synthesis").

Per class c a queue of the last S penultimate features z; a class-conditional Gaussian with a shared covariance

    μ_c = mean of queue c,   Σ = (1/(C·S)) Σ_c Σ_i (z_ci − μ_c)(z_ci − μ_c)ᵀ + 1e-4 · I

From each N(μ_c, Σ) draw ``sample_from`` points and keep the ``select`` with the lowest likelihood: virtual
outliers v in the tail. With a learnable non-negative weight w (``weight_energy``) the weighted free energy

    φ(x) = log Σ_c relu(w_c) · exp f_c(x)

feeds a logistic regression (Linear(1, 2)) that separates ID (label 1) from virtual outliers (label 0, logits
head(v)):  L = CE(f(x), y) + β · CE_lr([φ(x); φ(head(v))], [1; 0]).

Reference defaults (CIFAR): S = 1000 (``sample_number``), ``sample_from`` = 10000, ``select`` = 1, β = 0.1
(``loss_weight``), the term starts at epoch 40 of 100 (``start_epoch``) and only once every queue is full. The
paper scores with the (unweighted) energy, this method's own score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import OODLensError
from ._queue import ClassQueue, QueuedSynthesis
from .base import StepContext, check_numbers

#: numbers per block of Gaussian draws (sample_from × classes × D) before the classes are split into chunks
DRAW_BLOCK = 1 << 24


def class_gaussians(queue: Tensor, jitter: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Means (C, D) and the shared covariance (D, D) of a (C, S, D) queue (divides by C·S, adds jitter·I)."""
    mu = queue.mean(dim=1)
    centred = (queue - mu[:, None]).reshape(-1, queue.shape[-1])
    cov = centred.t() @ centred / centred.shape[0]
    return mu, cov + jitter * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)


def sample_virtual_outliers(mu: Tensor, cov: Tensor, sample_from: int = 10000, select: int = 1) -> Tensor:
    """For each class: ``sample_from`` draws of N(μ_c, Σ), keep the ``select`` of lowest log-density; (C·select, D).

    A draw is x = μ_c + L ε (Σ = L Lᵀ, ε ~ N(0, I)) and log N(x; μ_c, Σ) = const − ‖ε‖²/2, so the lowest-density
    draws are those of largest ‖ε‖²: they are selected on ε and only they are transformed (the same draws and the
    same choice as ranking ``MultivariateNormal.log_prob``, without the D×D product for every draw)."""
    if select > sample_from:
        raise OODLensError(f"select ({select}) must be <= sample_from ({sample_from})")
    c, d = mu.shape
    chol = torch.linalg.cholesky(cov)
    chunk = max(1, DRAW_BLOCK // max(sample_from * d, 1))
    out = []
    for i in range(0, c, chunk):  # chunks of classes bound the memory of the draws
        m = mu[i:i + chunk]
        eps = torch.randn(sample_from, m.shape[0], d, dtype=mu.dtype, device=mu.device)
        idx = torch.topk(eps.pow(2).sum(-1), select, dim=0).indices  # (select, chunk): lowest likelihood per class
        tail = eps.gather(0, idx[..., None].expand(-1, -1, d))  # (select, chunk, D)
        out.append((m[None] + tail @ chol.T).transpose(0, 1).reshape(-1, d))
    return torch.cat(out)


def weighted_logsumexp(logits: Tensor, weight: Tensor) -> Tensor:
    """log Σ_c relu(w_c) exp(f_c), computed stably (max subtracted)."""
    m = logits.max(dim=1, keepdim=True).values
    return m[:, 0] + torch.log((F.relu(weight) * torch.exp(logits - m)).sum(dim=1))


def vos_uncertainty_loss(phi_in: Tensor, phi_out: Tensor, logistic: nn.Linear) -> Tensor:
    """CE of Linear(1, 2) on the weighted energies, ID → class 1, virtual outliers → class 0."""
    inputs = torch.cat([phi_in, phi_out])[:, None]
    labels = torch.cat([torch.ones_like(phi_in), torch.zeros_like(phi_out)]).long()
    return F.cross_entropy(logistic(inputs), labels)


class VOS(QueuedSynthesis):
    name = "vos"
    term_name = "uncertainty"
    paper = "Du et al., ICLR 2022"
    score = ("energy", {})

    def __init__(self, sample_number: int = 1000, sample_from: int = 10000, select: int = 1,
                 loss_weight: float = 0.1, start_epoch: int = 40):
        check_numbers("VOS", ints=dict(sample_number=sample_number, sample_from=sample_from, select=select,
                                       start_epoch=start_epoch), floats=dict(loss_weight=loss_weight))
        if min(sample_number, sample_from, select) < 1 or loss_weight < 0 or start_epoch < 0:
            raise OODLensError("VOS needs sample_number, sample_from, select >= 1, loss_weight >= 0, start_epoch >= 0")
        self.sample_number, self.sample_from, self.select = int(sample_number), int(sample_from), int(select)
        self.loss_weight, self.start_epoch = float(loss_weight), int(start_epoch)

    def setup(self, model, head_name, num_classes, feature_dim) -> None:
        device = self._make_queue(model, num_classes, feature_dim)
        self.weight_energy = nn.Linear(num_classes, 1).to(device)
        nn.init.uniform_(self.weight_energy.weight)
        self.logistic = nn.Linear(1, 2).to(device)

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.weight_energy.parameters()) + list(self.logistic.parameters())}]

    def outlier_term(self, ctx: StepContext, queue: ClassQueue) -> Tensor:
        mu, cov = class_gaussians(queue.data)
        virtual = sample_virtual_outliers(mu, cov, self.sample_from, self.select)
        w = self.weight_energy.weight[0]
        return vos_uncertainty_loss(weighted_logsumexp(ctx.logits, w), weighted_logsumexp(ctx.head(virtual), w),
                                    self.logistic)
