"""Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017, "A Baseline for Detecting Misclassified and
Out-of-Distribution Examples").

    score(x) = − max_c softmax(f(x))_c

Needs logits only; no fitting.
"""

from __future__ import annotations

import torch

from .base import Detector


class MSP(Detector):
    name = "msp"

    def __init__(self, logits: str = "logits"):
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.logits,)

    def _fit(self, train, labels, head, model) -> None:
        pass

    def _score(self, x) -> torch.Tensor:
        return -torch.softmax(x[self.logits], dim=1).amax(1)
