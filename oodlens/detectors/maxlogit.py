"""Maximum logit (Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt, Song — ICML 2022, "Scaling
Out-of-Distribution Detection for Real-World Settings").

    score(x) = − max_c f_c(x)

The paper's confidence is the largest unnormalised logit (higher = more ID); it is negated here so that higher
means more OOD. Unlike MSP it is not squashed by the softmax normaliser, which helps with many classes.
No hyper-parameters and no fitting.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ._logit_only import LogitOnlyDetector


class MaxLogit(LogitOnlyDetector):
    name = "maxlogit"

    def _score(self, x) -> torch.Tensor:
        return -as_float(x[self.logits]).amax(1)
