"""GL-MCM, Global-Local Maximum Concept Matching (Miyai et al., 2023, "Zero-Shot In-Distribution Detection in
Multi-Object Settings Using Vision-Language Foundation Models"; IJCV 2025):

    score(x) = − [ max_k softmax_k(cos(g, t_k)/τ)  +  λ · max_{p,k} softmax_k(cos(l_p, t_k)/τ_local) ]

g: the global image embedding (``features``, (N, D)); l_p: the local patch embeddings (``local_features``,
(N, P, D): CLIP's patch tokens through the final layer norm and projection — ``oodlens.encoders.clip_images(...,
local=True)``); t_k: the ID prompt embeddings. The softmax over classes is taken per patch, then the maximum over
patches and classes. Defaults from the reference code (AtsuMiyai/GL-MCM, eval_ood_detection.py): τ = τ_local = 1
(one ``--T 1`` for both), λ = 1 (``--lambda_local 1.0``; its ImageNet script uses 0.5).
"""

from __future__ import annotations

import torch

from ..encoders.zero_shot import cosine
from ..errors import OODLensError
from ..features import Features
from ._zero_shot import check_positive, id_prompts
from .base import Detector


class GLMCM(Detector):
    name = "gl_mcm"
    needs_prompts = True
    spatial_inputs = True
    param_grid = {"lambda_local": [0.0, 0.5, 1.0, 2.0], "local_temperature": [0.1, 1.0]}
    score_only_params = frozenset({"temperature", "local_temperature", "lambda_local"})
    test_params = {"local_features": "block2_map"}

    def __init__(self, temperature: float = 1.0, local_temperature: float = 1.0, lambda_local: float = 1.0,
                 features: str = "features", local_features: str = "local_features"):
        self.temperature = temperature
        self.local_temperature = local_temperature
        self.lambda_local = lambda_local
        self.features = features
        self.local_features = local_features

    def required_features(self) -> tuple[str, ...]:
        return (self.features, self.local_features)

    def _features_from_prompts(self) -> Features:
        p = self.prompts_
        return Features({self.features: p, self.local_features: p[:, None, :]})

    def _local(self, x: Features) -> torch.Tensor:
        """(N, P, D) local embeddings; channel-first maps (N, D, H, W) are read as H·W patches."""
        t = x[self.local_features]
        if t.ndim == 4:
            t = t.flatten(2).transpose(1, 2)
        if t.ndim != 3:
            raise OODLensError(f"feature {self.local_features!r} must be (N, P, D) patch embeddings, got shape "
                               f"{tuple(t.shape)}")
        return t

    def _check_shapes(self, x: Features) -> Features:
        g = x[self.features]
        if g.ndim != 2 or g.shape[1] != self.feature_shapes_[self.features][0]:
            raise OODLensError(f"feature {self.features!r} has shape {tuple(g.shape)} but the detector was fitted on "
                               f"(N, {self.feature_shapes_[self.features][0]})")
        if self._local(x).shape[-1] != g.shape[1]:
            raise OODLensError(f"feature {self.local_features!r} has shape {tuple(x[self.local_features].shape)}: its "
                               f"embedding width must be {g.shape[1]} like {self.features!r}")
        return x

    def _fit(self, train, labels, head, model) -> None:
        check_positive(self.temperature, "temperature")
        check_positive(self.local_temperature, "local_temperature")
        if not float(self.lambda_local) >= 0:
            raise OODLensError(f"lambda_local must be ≥ 0, got {self.lambda_local!r}")
        if train[self.features].ndim != 2:
            raise OODLensError(f"feature {self.features!r} must be (N, D), got shape {tuple(train[self.features].shape)}")
        self.concepts_ = id_prompts(self, train, labels, head)
        cosine(train[self.features][:1], self.concepts_)
        self._check_shapes(train)

    def _score(self, x) -> torch.Tensor:
        glob = torch.softmax(cosine(x[self.features], self.concepts_) / float(self.temperature), dim=1).amax(1)
        loc = torch.softmax(cosine(self._local(x), self.concepts_) / float(self.local_temperature), dim=2)
        return -(glob + float(self.lambda_local) * loc.flatten(1).amax(1))
