"""Base for detectors that read only the logits and learn nothing at fit (MSP, MaxLogit, Entropy), and the row-block
loop that logits-only scores share (bounded memory: work buffers of at most ``LOGIT_BLOCK`` numbers, reused)."""

from __future__ import annotations

from typing import Callable

import torch

from ._gaussian import block_rows
from .base import Detector

#: numbers per (rows × C) work buffer when scoring logits in row blocks (4 MiB in float32): few blocks, as each is
#: a handful of elementwise operations (many small ones cost more, above all on a busy machine)
LOGIT_BLOCK = 1 << 20


def map_row_blocks(x: torch.Tensor, block_fn: Callable[..., torch.Tensor], buffers: int = 1,
                   budget: int | None = None) -> torch.Tensor:
    """``block_fn(x[rows], *work)`` for consecutive row blocks of ``x`` (N, C), gathered into one (N,) tensor in
    ``x``'s dtype. ``work`` are ``buffers`` scratch tensors shaped like the block, allocated once and reused."""
    n, c = x.shape
    rows = block_rows(n, c, LOGIT_BLOCK if budget is None else budget)
    work = [torch.empty(rows, c, dtype=x.dtype, device=x.device) for _ in range(buffers)]
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    for i in range(0, n, rows):
        r = min(rows, n - i)
        out[i:i + r] = block_fn(x[i:i + r], *(w[:r] for w in work))
    return out


class LogitOnlyDetector(Detector):
    """Hyper-parameter: the name of the logits feature. ``_fit`` stores nothing; subclasses define ``_score``."""

    def __init__(self, logits: str = "logits"):
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.logits,)

    def _fit(self, train, labels, head, model) -> None:
        pass
