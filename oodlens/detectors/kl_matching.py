"""KL-Matching (Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt, Song — ICML 2022, "Scaling
Out-of-Distribution Detection for Real-World Settings").

    p(x) = softmax(f(x))
    d_c  = mean of p(x') over the reference inputs x' that the classifier *predicts* as class c
    score(x) = min_c KL(p(x) ‖ d_c) = min_c [ Σ_j p_j log p_j − Σ_j p_j log d_cj ]

A large divergence from every class's typical posterior = more OOD, so no sign change is needed (the paper and
OpenOOD's ``KLMatchingPostprocessor`` return −min_c KL as a confidence). As in the paper and the reference code:
the minimum runs over *all* class templates (not only the predicted class), the templates use predicted labels
(no ground truth needed), and they come from held-out ID **validation** data: ``fit`` builds them from the
training logits, and ``fit_validation`` (``validation_needs = "id"``) rebuilds them from ID validation logits,
which then replace the training ones. No hyper-parameters.

A class that no reference input is predicted as has no template. OpenOOD gives it a one-hot template, whose KL
from any softmax is infinite, so it never attains the minimum; here it is simply left out (same scores).

Numerics: the log-templates are accumulated in float64 as a per-class log-mean-exp of log-softmax values (so a
probability that underflows in the linear domain still gives a finite log d_cj); the score is evaluated for all
classes in one matrix product ``p · log d_cᵀ`` in float64, with Σ p log p taken from the log-softmax (0·log 0 = 0).
Tiny negative values from rounding are clamped to 0.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from .base import Detector

_CHUNK = 16384


def log_mean_softmax_per_predicted_class(logits: torch.Tensor, chunk: int = _CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Log of the mean softmax of the rows predicted as each class, float64 (K, C), and those classes (K,).

    Two passes over row chunks: per (class, column) maxima of the log-softmax, then sums of
    ``exp(log p − max)``, so the (C, C) statistics are exact in log space and memory stays O(chunk · C).
    """
    n, c = logits.shape
    dev = logits.device
    top = torch.full((c, c), float("-inf"), dtype=torch.float64, device=dev)
    counts = torch.zeros(c, dtype=torch.float64, device=dev)
    for i in range(0, n, chunk):
        logp = torch.log_softmax(logits[i:i + chunk].to(torch.float64), dim=1)
        pred = logp.argmax(1)
        top.scatter_reduce_(0, pred[:, None].expand(-1, c), logp, reduce="amax")
        counts += torch.bincount(pred, minlength=c).to(torch.float64)
    present = (counts > 0).nonzero().flatten()
    if present.numel() == 0:
        raise OODLensError("KL-Matching needs at least one reference sample to build class templates, got none")
    safe_top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # rows of absent classes
    sums = torch.zeros(c, c, dtype=torch.float64, device=dev)
    for i in range(0, n, chunk):
        logp = torch.log_softmax(logits[i:i + chunk].to(torch.float64), dim=1)
        pred = logp.argmax(1)
        sums.index_add_(0, pred, (logp - safe_top[pred]).exp())
    log_mean = sums.log() + safe_top - counts.clamp_min(1).log()[:, None]
    return log_mean[present], present


class KLMatching(Detector):
    name = "kl_matching"
    validation_needs = "id"

    def __init__(self, logits: str = "logits"):
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.logits,)

    def _set_templates(self, logits: torch.Tensor) -> None:
        self.log_templates_, self.template_classes_ = log_mean_softmax_per_predicted_class(logits)

    def _fit(self, train, labels, head, model) -> None:
        self._set_templates(train[self.logits])

    def _fit_validation(self, id_val, id_labels, ood_val) -> None:
        z = id_val[self.logits]
        want = self.feature_shapes_[self.logits]
        if list(z.shape[1:]) != list(want):
            raise OODLensError(f"validation feature {self.logits!r} has shape {tuple(z.shape)} but the detector "
                               f"was fitted on (N, {', '.join(map(str, want))})")
        if z.shape[0] == 0:
            raise OODLensError("ID validation features are empty (N=0)")
        self._set_templates(z)

    def _score(self, x) -> torch.Tensor:
        f = as_float(x[self.logits])  # float16 in, float32 out
        logp = torch.log_softmax(f.to(torch.float64), dim=1)
        p = logp.exp()
        neg_entropy = (p * logp).sum(1, keepdim=True)
        kl = neg_entropy - p @ self.log_templates_.to(torch.float64).T
        return kl.amin(1).clamp_min(0).to(f.dtype)
