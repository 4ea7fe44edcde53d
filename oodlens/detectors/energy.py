"""Energy score (Liu et al., NeurIPS 2020, "Energy-based Out-of-distribution Detection").

    score(x) = E(x; T) = − T · log Σ_c exp(f_c(x) / T)

Higher energy = more OOD. Default T = 1 as in the reference code.
"""

from __future__ import annotations

import torch

from ._logit_only import map_row_blocks
from .base import Detector


class Energy(Detector):
    name = "energy"
    param_grid = {"temperature": [0.5, 1.0, 2.0, 5.0, 10.0]}
    score_only_params = frozenset({"temperature"})

    def __init__(self, temperature: float = 1.0, logits: str = "logits"):
        self.temperature = temperature
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.logits,)

    def _fit(self, train, labels, head, model) -> None:
        if self.temperature <= 0:
            from ..errors import OODLensError

            raise OODLensError(f"temperature must be > 0, got {self.temperature}")

    def _score(self, x) -> torch.Tensor:
        t = float(self.temperature)

        def block(z: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
            return torch.logsumexp(torch.div(z, t, out=work), dim=1).mul_(-t)

        return map_row_blocks(x[self.logits], block, buffers=1)  # row blocks: no scaled copy of the logits
