"""Model blocks of MultiOOD: one encoder per modality, one linear head per modality, and a fused linear head on the
concatenated embeddings.

    z_m = dropout(encoder_m(x_m))            (N, D_m)   embedding of modality m
    l_m = W_m z_m + b_m                      (N, C)     per-modality logits (the reference's ``cls_head.fc_cls``)
    l   = W [z_1, …, z_M] + b                (N, C)     fused logits (the reference's ``Encoder``/``mlp_cls``)

The fused prediction is the model's prediction; the per-modality heads feed A2D and the outlier terms. In MultiOOD
the encoders are SlowFast / SlowOnly backbones (only their last stage trained) whose heads apply dropout 0.8 before
``fc_cls`` and return the post-dropout embedding; ``dropout`` reproduces that (default 0, as the encoders here are
often small or the identity on pre-extracted features). Encoders can be any ``nn.Module`` mapping one modality's
input to (N, D_m), or ``None`` for the identity on pre-extracted features.

:meth:`MultimodalClassifier.extract` returns the :class:`~oodlens.features.Features` detectors read: ``logits``
(fused) and ``features`` (the concatenated embeddings, what MultiOOD's feature-based detectors use), plus
``<modality>/logits`` and ``<modality>/features``. Weights save to safetensors (never pickle).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from .._checks import check_finite
from ..detectors.base import Head
from ..errors import OODLensError
from ..features import Features
from ..safetensors_io import load_tensors, save_tensors


@dataclass
class MultimodalOutput:
    """Forward pass: embeddings and logits per modality (in the model's modality order), fused logits."""

    embeddings: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]
    fused_logits: torch.Tensor


def mlp_encoder(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    """A small two-layer perceptron encoder (Linear → ReLU → Linear → ReLU), e.g. on pre-extracted features."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim), nn.ReLU())


class MultimodalClassifier(nn.Module):
    """Per-modality encoders and heads plus a fused head on the concatenated embeddings (≥ 2 modalities).

    >>> model = MultimodalClassifier({"video": enc_v, "flow": None}, {"video": 256, "flow": 2048}, num_classes=25)
    >>> out = model({"video": xv, "flow": xf}); out.fused_logits.shape     # (N, 25)
    """

    def __init__(self, encoders: Mapping[str, nn.Module | None], dims: Mapping[str, int], num_classes: int,
                 dropout: float = 0.0):
        super().__init__()
        names = list(encoders)
        if len(names) < 2:
            raise OODLensError(f"a multimodal model needs at least 2 modalities, got {names}")
        for m in names:
            if not isinstance(m, str) or not m or "/" in m:
                raise OODLensError(f"modality names must be non-empty strings without '/', got {m!r}")
            if m not in dims:
                raise OODLensError(f"no embedding dimension given for modality {m!r} (dims has {sorted(dims)})")
            if int(dims[m]) < 1:
                raise OODLensError(f"embedding dimension of {m!r} must be ≥ 1, got {dims[m]}")
        if num_classes < 2:
            raise OODLensError(f"num_classes must be ≥ 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise OODLensError(f"dropout must be in [0, 1), got {dropout}")
        self.modalities: list[str] = names
        self.dims = {m: int(dims[m]) for m in names}
        self.num_classes = int(num_classes)
        self.encoders = nn.ModuleDict({m: (encoders[m] if encoders[m] is not None else nn.Identity()) for m in names})
        self.heads = nn.ModuleDict({m: nn.Linear(self.dims[m], self.num_classes) for m in names})
        self.fused_head = nn.Linear(sum(self.dims.values()), self.num_classes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dropout_p = float(dropout)

    # -- forward ---------------------------------------------------------------------------------------
    def embed(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise OODLensError(f"inputs lack modalities {missing} (given: {sorted(inputs)})")
        out = {}
        for m in self.modalities:
            z = self.dropout(self.encoders[m](inputs[m]))
            if z.ndim != 2 or z.shape[1] != self.dims[m]:
                raise OODLensError(f"encoder of {m!r} returned shape {tuple(z.shape)}, expected (N, {self.dims[m]})")
            out[m] = z
        rows = {m: int(z.shape[0]) for m, z in out.items()}
        if len(set(rows.values())) != 1:
            raise OODLensError(f"modalities disagree on the number of inputs N: {rows}")
        return out

    def heads_forward(self, embeddings: Mapping[str, torch.Tensor]) -> MultimodalOutput:
        logits = {m: self.heads[m](embeddings[m]) for m in self.modalities}
        fused = self.fused_head(torch.cat([embeddings[m] for m in self.modalities], dim=1))
        return MultimodalOutput(dict(embeddings), logits, fused)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> MultimodalOutput:
        return self.heads_forward(self.embed(inputs))

    def split(self, concatenated: torch.Tensor) -> list[torch.Tensor]:
        """Split (N, Σ D_m) concatenated embeddings back into per-modality parts."""
        return list(torch.split(concatenated, [self.dims[m] for m in self.modalities], dim=1))

    # -- features for detectors --------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, inputs: Mapping[str, Any], batch_size: int = 4096, device: str | torch.device | None = None) -> Features:
        """Run the model in eval mode and return ``logits``, ``features`` and ``<m>/logits``, ``<m>/features``."""
        dev = torch.device(device) if device is not None else next(self.parameters()).device
        tensors = {m: torch.as_tensor(inputs[m]) for m in self.modalities if m in inputs}
        if len(tensors) != len(self.modalities):
            raise OODLensError(f"inputs lack modalities {[m for m in self.modalities if m not in tensors]}")
        n = {t.shape[0] for t in tensors.values()}
        if len(n) != 1:
            raise OODLensError(f"modalities disagree on N: { {m: t.shape[0] for m, t in tensors.items()} }")
        n_rows = n.pop()
        was_training = self.training
        self.eval()
        parts: dict[str, list[torch.Tensor]] = {}
        try:
            for i in range(0, n_rows, batch_size):
                batch = {m: t[i:i + batch_size].to(dev, torch.float32 if t.is_floating_point() else t.dtype)
                         for m, t in tensors.items()}
                out = self(batch)
                rows = {"logits": out.fused_logits,
                        "features": torch.cat([out.embeddings[m] for m in self.modalities], 1)}
                for m in self.modalities:
                    rows[f"{m}/logits"] = out.logits[m]
                    rows[f"{m}/features"] = out.embeddings[m]
                for k, v in rows.items():
                    parts.setdefault(k, []).append(v.float().cpu())
        finally:
            self.train(was_training)
        if not parts:
            raise OODLensError("extract: no rows (N=0)")
        return Features({k: torch.cat(v) for k, v in parts.items()})

    def head_of(self, modality: str | None = None) -> Head:
        """The fused head (``None`` / ``"fused"``) or a modality's head, as a detector ``Head``."""
        if modality in (None, "fused"):
            return Head.coerce(self.fused_head)
        if modality not in self.heads:
            raise OODLensError(f"no modality {modality!r}; modalities: {self.modalities}")
        return Head.coerce(self.heads[modality])

    def all_heads(self) -> dict[str, Head]:
        return {"fused": self.head_of(None), **{m: self.head_of(m) for m in self.modalities}}

    # -- persistence ---------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"modalities": self.modalities, "dims": self.dims, "num_classes": self.num_classes,
                "dropout": self.dropout_p}

    def save(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
        """Write the weights to a safetensors file with the configuration (and ``metadata``) in its header."""
        tensors = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        save_tensors(tensors, path, {"oodlens": "multimodal_classifier", "config": json.dumps(self.config()),
                                     "user": json.dumps(dict(metadata or {}))})

    def load_weights(self, path: str | os.PathLike) -> dict[str, Any]:
        """Load weights saved by :meth:`save` into this (identically configured) model; returns the metadata."""
        tensors, meta = load_tensors(path, mmap=False)
        if meta.get("oodlens") != "multimodal_classifier":
            raise OODLensError(f"{path} is not a saved oodlens multimodal classifier")
        try:
            cfg, user = json.loads(meta.get("config", "")), json.loads(meta.get("user", "{}"))
        except json.JSONDecodeError as e:
            raise OODLensError(f"{path}: header field 'config' or 'user' is not valid JSON ({e})") from None
        if not isinstance(cfg, dict) or not isinstance(user, dict):
            raise OODLensError(f"{path}: header fields 'config' and 'user' must be JSON objects")
        if any(cfg.get(k) != v for k, v in (("modalities", self.modalities), ("dims", self.dims),
                                             ("num_classes", self.num_classes))):
            raise OODLensError(f"{path} holds a model with {cfg}, this model has {self.config()}")
        own = self.state_dict()
        for k, t in tensors.items():  # shapes and values before load_state_dict (its errors are internal)
            if k in own and (t.shape != own[k].shape or t.is_floating_point() != own[k].is_floating_point()):
                raise OODLensError(f"{path}: tensor {k!r} is {t.dtype} {tuple(t.shape)}, the model needs "
                                   f"{own[k].dtype} {tuple(own[k].shape)}")
            check_finite(t, f"{path}: tensor {k!r}")
        missing, unexpected = self.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise OODLensError(f"{path}: missing weights {missing[:5]}, unexpected {unexpected[:5]}")
        return user
