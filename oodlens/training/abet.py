"""AbeT — Ablated Learned Temperature Energy (LeVine, Pikus, Phillips, Norman, Amat Gil, Hendryx, 2024,
"Out-of-Distribution Detection & Applications With Ablated Learned Temperature Energy", arXiv:2401.12129).

Head on penultimate features φ(x) (GODIN-style numerator and learned temperature):

    h_i(x) = φ(x)·w_i / ((‖φ(x)‖ + δ)(‖w_i‖ + δ))          cosine numerator, no bias, δ = 1e-4
    T(x)   = σ(BN(v·φ(x) + c)) + ε                          learned temperature, ε = 1e-12
    logits = h(x) / T(x)                                    trained with plain cross-entropy

Score (the paper drops the "forefront" T(x) of the energy −T log Σ exp(h_i/T)):

    AbeT(x) = log Σ_i exp(h_i(x) / T(x))     (higher = more in-distribution)
    abet_score(x) = −AbeT(x)                 (higher = more OOD)

which is exactly the registered Energy detector with T = 1 on the head's logits h/T — ``abet_score`` scores rows
through :class:`oodlens.detectors.energy.Energy` rather than a copy. Defaults (δ, ε, Kaiming-normal weight init,
Linear → BatchNorm1d(1) → sigmoid for T) follow the reference code (nets.py, main.py of the authors' repository);
its training uses SGD lr 0.1, momentum 0.9, weight decay 1e-4.

The head also works per pixel: a feature map (B, D, H, W) is treated as B·H·W rows (a 1×1 convolution), the
batch norm of T pooling over batch and pixels (as BatchNorm2d(1) would), and logits come back as (B, C, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..detectors.energy import Energy
from ..errors import OODLensError
from .base import CrossEntropy, StepContext, check_numbers

#: δ added to the feature and weight norms of the cosine numerator (reference: 0.0001)
NORM_EPS = 1e-4
#: ε added to the learned temperature (reference: 1e-12)
TEMPERATURE_EPS = 1e-12


def _rows(phi: Tensor, in_features: int) -> tuple[Tensor, tuple[int, ...] | None]:
    """(N, D) as is, or a (B, D, H, W) map as (B·H·W, D) rows plus the shape to restore."""
    if not isinstance(phi, Tensor):
        raise OODLensError(f"AbeT head input must be a torch tensor, got {type(phi).__name__}")
    if phi.ndim == 2:
        rows, shape = phi, None
    elif phi.ndim == 4:
        b, d, h, w = phi.shape
        rows, shape = phi.permute(0, 2, 3, 1).reshape(-1, d), (b, h, w)
    else:
        raise OODLensError(f"AbeT head input must be (N, D) or (B, D, H, W), got shape {tuple(phi.shape)}")
    if rows.shape[1] != in_features:
        raise OODLensError(f"AbeT head expects {in_features} features on dim 1, got {rows.shape[1]}")
    return rows, shape


def _restore(rows: Tensor, shape: tuple[int, ...] | None) -> Tensor:
    if shape is None:
        return rows
    b, h, w = shape
    return rows.reshape(b, h, w, rows.shape[1]).permute(0, 3, 1, 2)


class AbeTHead(nn.Module):
    """Cosine numerator h(x) and learned temperature T(x); ``forward`` returns logits h/T (classes on dim 1)."""

    def __init__(self, in_features: int, num_classes: int, eps: float = TEMPERATURE_EPS, norm_eps: float = NORM_EPS):
        super().__init__()
        if in_features < 1 or num_classes < 2:
            raise OODLensError(f"AbeTHead needs in_features >= 1 and num_classes >= 2, got {in_features}, {num_classes}")
        if eps < 0 or norm_eps < 0:
            raise OODLensError(f"AbeTHead eps and norm_eps must be >= 0, got {eps}, {norm_eps}")
        self.in_features, self.num_classes = int(in_features), int(num_classes)
        self.eps, self.norm_eps = float(eps), float(norm_eps)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        self.temperature = nn.Linear(in_features, 1)
        self.bn = nn.BatchNorm1d(1)

    def _parts_rows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xn = x / (x.norm(dim=1, keepdim=True) + self.norm_eps)
        wn = self.weight / (self.weight.norm(dim=1, keepdim=True) + self.norm_eps)
        h = xn @ wn.t()
        t = torch.sigmoid(self.bn(self.temperature(x))) + self.eps
        return h, t

    def parts(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        """(h, T): numerators (N, C) or (B, C, H, W), temperatures (N, 1) or (B, 1, H, W)."""
        rows, shape = _rows(phi, self.in_features)
        h, t = self._parts_rows(rows)
        return _restore(h, shape), _restore(t, shape)

    def forward(self, phi: Tensor) -> Tensor:
        rows, shape = _rows(phi, self.in_features)
        h, t = self._parts_rows(rows)
        return _restore(h / t, shape)


def abet_loss(logits: Tensor, target: Tensor, ignore_index: int = -100) -> Tensor:
    """AbeT trains with plain cross-entropy on the head's logits h/T (classes on dim 1; pixels may be ignored)."""
    if logits.ndim < 2:
        raise OODLensError(f"logits must have classes on dim 1, got shape {tuple(logits.shape)}")
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def abet_score(logits: Tensor, dim: int = 1) -> Tensor:
    """OOD score −log Σ_i exp(h_i/T(x)) (higher = more OOD) of the head's logits, reduced over ``dim``.

    Equals the registered Energy detector with T = 1 on the logits h/T, which computes it (no gradient)."""
    if not isinstance(logits, Tensor) or logits.ndim < 1:
        raise OODLensError("abet_score needs a tensor of logits with a class dimension")
    z = logits.detach().movedim(dim, -1)
    rows = z.reshape(-1, z.shape[-1])
    if rows.shape[-1] < 1:
        raise OODLensError("abet_score needs at least one class")
    if rows.shape[0] == 0:
        return rows.new_empty(z.shape[:-1])
    scorer = Energy(temperature=1.0).fit({"logits": rows[:1]})
    return scorer.score({"logits": rows}).reshape(z.shape[:-1])


class AbeT(CrossEntropy):
    """Training-time method: replace the classifier's head by :class:`AbeTHead` and train with cross-entropy on
    h/T; own score: Energy with T = 1 on the new logits (= :func:`abet_score`)."""

    name = "abet"
    paper = "LeVine et al., 2024 (arXiv:2401.12129)"
    score = ("energy", {"temperature": 1.0})

    def __init__(self, eps: float = TEMPERATURE_EPS, norm_eps: float = NORM_EPS):
        check_numbers("AbeT", floats={"eps": eps, "norm_eps": norm_eps})
        if eps < 0 or norm_eps < 0:
            raise OODLensError(f"AbeT eps and norm_eps must be >= 0, got {eps}, {norm_eps}")
        self.eps, self.norm_eps = float(eps), float(norm_eps)

    def setup(self, model: nn.Module, head_name: str, num_classes: int, feature_dim: int) -> None:
        parent_name, _, leaf = head_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        device = next(model.parameters()).device
        setattr(parent, leaf, AbeTHead(feature_dim, num_classes, self.eps, self.norm_eps).to(device))

    def loss(self, ctx: StepContext) -> dict[str, Tensor]:
        ce = abet_loss(ctx.logits, ctx.y)
        return {"ce": ce, "loss": ce}
