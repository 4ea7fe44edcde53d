"""MCM, Maximum Concept Matching (Ming et al., NeurIPS 2022, "Delving into Out-of-Distribution Detection with
Vision-Language Representations"):

    score(x) = − max_k softmax_k( cos(x, t_1)/τ, …, cos(x, t_K)/τ )

with t_k the embeddings of the ID class prompts ("a photo of a <class>.") and x the image (or text) embedding.
Default τ = 1, as in the reference code (``--T 1`` in deeplearning-wisc/MCM, eval_ood_detection.py); the paper
shows larger τ helps, τ → 0 approaching MaxLogit on cosines. Zero-shot: ``fit(prompts=...)``, no ID rows needed.
"""

from __future__ import annotations

import torch

from ..encoders.zero_shot import cosine
from ._zero_shot import check_positive, id_prompts
from .base import Detector


class MCM(Detector):
    name = "mcm"
    needs_prompts = True
    param_grid = {"temperature": [0.01, 0.1, 1.0, 10.0]}
    score_only_params = frozenset({"temperature"})

    def __init__(self, temperature: float = 1.0, features: str = "features"):
        self.temperature = temperature
        self.features = features

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    def _fit(self, train, labels, head, model) -> None:
        check_positive(self.temperature, "temperature")
        self.concepts_ = id_prompts(self, train, labels, head)
        cosine(train[self.features][:1], self.concepts_)  # same width, else a clear error now

    def _score(self, x) -> torch.Tensor:
        s = cosine(x[self.features], self.concepts_) / float(self.temperature)
        return -torch.softmax(s, dim=1).amax(1)
