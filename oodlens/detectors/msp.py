"""Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017, "A Baseline for Detecting Misclassified and
Out-of-Distribution Examples").

    score(x) = − max_c softmax(f(x))_c

Needs logits only; no fitting.
"""

from __future__ import annotations

import torch

from ._logit_only import LogitOnlyDetector


class MSP(LogitOnlyDetector):
    name = "msp"

    def _score(self, x) -> torch.Tensor:
        return -torch.softmax(x[self.logits], dim=1).amax(1)
