"""What the zero-shot detectors (MCM, GL-MCM, NegLabel) share: their ID "class prompts" in embedding space and a
positive-temperature check.

The prompts are, in order of preference: ``fit(prompts=...)`` (text embeddings of the class-name prompts, the
zero-shot setting); else the classifier head's weight rows (a CLIP zero-shot classifier's head *is* its prompt
embeddings); else the class means of the training features (image prototypes), when labels are given.
"""

from __future__ import annotations

import math

import torch

from ..errors import OODLensError
from ._gaussian import class_means


def id_prompts(det, train, labels, head) -> torch.Tensor:
    """(K, D) ID prompt embeddings for ``det`` (see the module docstring for the fallbacks)."""
    p = getattr(det, "prompts_", None)
    if p is None and head is not None:
        p = head.weight
    if p is None and labels is not None:
        p = class_means(train[det.features], labels)[0].float()
    if p is None:
        raise OODLensError(f"{type(det).__name__} needs the class prompts' embeddings: fit(prompts=(K, D)) — or a "
                           "head=, or labels= to use class means")
    return p.detach().clone()


def check_positive(value: float, name: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise OODLensError(f"{name} must be a finite number > 0, got {value!r}")
    return v
