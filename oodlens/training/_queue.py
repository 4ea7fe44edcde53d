"""Per-class feature queues (VOS, NPOS): ``capacity`` detached penultimate features per class.

As in the reference code, queues first fill in arrival order; once every class is full each new feature replaces
the oldest of its class (a ring buffer here: same contents, order irrelevant to means, covariances and KNN).
Updates are one scatter per batch, no loop over samples or classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import OODLensError
from .base import CrossEntropy, StepContext


class ClassQueue:
    def __init__(self, num_classes: int, capacity: int, dim: int, device: torch.device | str = "cpu"):
        if num_classes < 1 or capacity < 1 or dim < 1:
            raise OODLensError(f"ClassQueue needs positive sizes, got C={num_classes}, capacity={capacity}, D={dim}")
        self.num_classes, self.capacity, self.dim = int(num_classes), int(capacity), int(dim)
        self.data = torch.zeros(num_classes, capacity, dim, device=device)
        self.count = torch.zeros(num_classes, dtype=torch.long, device=device)  # filled slots (fill phase)
        self.ptr = torch.zeros(num_classes, dtype=torch.long, device=device)  # next slot to overwrite (ring phase)

    @property
    def full(self) -> bool:
        return bool((self.count == self.capacity).all())

    def push(self, features: Tensor, labels: Tensor) -> None:
        """Add a batch of (N, D) features with their (N,) labels (detached)."""
        f = features.detach().to(self.data)
        y = labels.to(self.data.device).long()
        onehot = F.one_hot(y, self.num_classes)
        rank = (onehot.cumsum(0) - 1).gather(1, y[:, None])[:, 0]  # position of each row among its class's rows
        n_c = onehot.sum(0)
        if not self.full:
            pos = self.count[y] + rank
            keep = pos < self.capacity
            self.data[y[keep], pos[keep]] = f[keep]
            self.count = torch.clamp(self.count + n_c, max=self.capacity)
            return
        keep = rank >= (n_c[y] - self.capacity)  # more than `capacity` new rows of a class: the last ones win
        pos = (self.ptr[y] + rank) % self.capacity
        self.data[y[keep], pos[keep]] = f[keep]
        self.ptr = (self.ptr + n_c) % self.capacity


class QueuedSynthesis(CrossEntropy):
    """Shared step of VOS and NPOS: CE on the batch, the batch's features pushed to the class queues, and — once
    every queue was full before this batch and from ``start_epoch`` on — ``CE + loss_weight · outlier term``."""

    term_name = "outlier"
    sample_number: int
    start_epoch: int
    loss_weight: float
    _queue: ClassQueue | None = None

    def _make_queue(self, model: torch.nn.Module, num_classes: int, feature_dim: int) -> torch.device:
        device = next(model.parameters()).device
        self._queue = ClassQueue(num_classes, self.sample_number, feature_dim, device)
        return device

    def outlier_term(self, ctx: StepContext, queue: ClassQueue) -> Tensor:
        raise NotImplementedError

    def loss(self, ctx: StepContext) -> dict[str, Tensor]:
        if self._queue is None:
            raise OODLensError(f"{type(self).__name__}.setup was not called")
        ce = F.cross_entropy(ctx.logits, ctx.y)
        was_full = self._queue.full
        self._queue.push(ctx.features, ctx.y)
        terms = {"ce": ce, "loss": ce}
        if was_full and ctx.epoch >= self.start_epoch:  # as the references: only once every queue was full
            terms[self.term_name] = self.outlier_term(ctx, self._queue)
            terms["loss"] = ce + self.loss_weight * terms[self.term_name]
        return terms
