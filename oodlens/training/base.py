"""What a training-time method is: a loss on one step's context, an optional change of the model (a new head,
extra parameters), and the registered detector that scores it ("its own score").

The plain baseline, :class:`CrossEntropy`, is the base class itself: ``loss = CE(f(x), y)``; its own score is MSP
(Hendrycks & Gimpel, ICLR 2017).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import OODLensError


def check_numbers(owner: str, ints: dict[str, Any] | None = None, floats: dict[str, Any] | None = None) -> None:
    """Every value in ``ints`` an integer and every one in ``floats`` a finite real number (bools refused), else an
    OODLensError naming ``owner`` and the parameter; the methods' own range checks follow."""
    import math
    import numbers

    for name, v in (ints or {}).items():
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise OODLensError(f"{owner} {name} must be an integer, got {v!r}")
    for name, v in (floats or {}).items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise OODLensError(f"{owner} {name} must be a finite number, got {v!r}")


@dataclass
class StepContext:
    """Everything a loss may read in one training step (the model is in train mode).

    ``features``/``logits``: penultimate features and logits of the ID batch ``x`` (labels ``y``).
    ``outlier_inputs``: auxiliary outlier inputs drawn for this step (None without an outlier source);
    ``outlier_features``/``outlier_logits``: their outputs when the method asks for them in the same forward pass.
    ``forward(x) -> (features, logits)`` runs the model on any other input (e.g. mixed images); ``head`` maps
    features to logits (virtual outliers in feature space); ``generator`` is the run's seeded torch generator.
    """

    x: Tensor
    y: Tensor
    features: Tensor
    logits: Tensor
    epoch: int
    step: int
    forward: Callable[[Tensor], tuple[Tensor, Tensor]]
    head: nn.Module
    generator: torch.Generator
    outlier_inputs: Tensor | None = None
    outlier_features: Tensor | None = None
    outlier_logits: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CrossEntropy:
    """Plain cross-entropy, the baseline every method is compared with; base class of every method.

    Subclasses set ``name``, ``needs_outliers`` (an outlier source must be given), ``concat_outliers`` (outliers go
    through the same forward pass as the ID batch, as in OE and energy fine-tuning) and ``score`` (registered
    detector name and its parameters); they override :meth:`loss` and, if they change the model, :meth:`setup`.
    """

    name = "ce"
    paper = "cross-entropy"
    needs_outliers = False
    concat_outliers = True
    score: tuple[str, dict[str, Any]] = ("msp", {})

    def setup(self, model: nn.Module, head_name: str, num_classes: int, feature_dim: int) -> None:
        """Adapt the model before training (replace the head, create extra modules); default: nothing."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Extra trainable parameters as optimiser parameter groups (each may set its own ``lr``)."""
        return []

    def loss(self, ctx: StepContext) -> dict[str, Tensor]:
        """Loss terms of one step; ``"loss"`` is the total that is back-propagated."""
        ce = F.cross_entropy(ctx.logits, ctx.y)
        return {"ce": ce, "loss": ce}

    def params(self) -> dict[str, Any]:
        """Hyper-parameters (public attributes) for reports and checkpoint metadata."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, (int, float, str, bool))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"
