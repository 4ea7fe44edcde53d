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
probability that underflows in the linear domain still gives a finite log d_cj). The score is evaluated for all
classes in one matrix product ``p · log d_cᵀ`` in the input precision (float32 for float32/float16 logits,
float64 for float64), in row blocks, with Σ p log p taken from the log-softmax (0·log 0 = 0). Each KL is a
cross-entropy minus an entropy, so its rounding error is about ε·(H(p) + H(p, d_c)) — near 1e-6 in float32 at the
minimising template, where both are O(log C); tiny negative values from rounding are clamped to 0.
"""

from __future__ import annotations

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._blocks import rows_within
from ._gaussian import block_rows
from .base import Detector

#: numbers per float64 row chunk when building the templates (2 MiB: a few such temporaries at a time)
_CHUNK = 1 << 18
#: numbers per scoring block: few, large operations on reused buffers
_SCORE_BLOCK = 1 << 20


def log_mean_softmax_per_predicted_class(logits: torch.Tensor, chunk: int = _CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Log of the mean softmax of the rows predicted as each class, float64 (K, C), and those classes (K,).

    Two passes over row chunks of about ``chunk`` numbers: per (class, column) maxima of the log-softmax, then sums
    of ``exp(log p − max)``, so the (C, C) statistics are exact in log space and memory stays O(chunk).
    """
    n, c = logits.shape
    dev = logits.device
    rows = block_rows(n, c, chunk)
    top = torch.full((c, c), float("-inf"), dtype=torch.float64, device=dev)
    counts = torch.zeros(c, dtype=torch.float64, device=dev)
    for i in range(0, n, rows):
        logp = torch.log_softmax(logits[i:i + rows].to(torch.float64), dim=1)
        pred = logp.argmax(1)
        top.scatter_reduce_(0, pred[:, None].expand(-1, c), logp, reduce="amax")
        counts += torch.bincount(pred, minlength=c).to(torch.float64)
    present = (counts > 0).nonzero().flatten()
    if present.numel() == 0:
        raise OODLensError("KL-Matching needs at least one reference sample to build class templates, got none")
    safe_top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # rows of absent classes
    sums = torch.zeros(c, c, dtype=torch.float64, device=dev)
    for i in range(0, n, rows):
        logp = torch.log_softmax(logits[i:i + rows].to(torch.float64), dim=1)
        pred = logp.argmax(1)
        sums.index_add_(0, pred, logp.sub_(safe_top[pred]).exp_())
    log_mean = sums.log() + safe_top - counts.clamp_min(1).log()[:, None]
    return log_mean[present], present


def min_kl_to_templates(logits: torch.Tensor, log_templates: torch.Tensor, block: int = _SCORE_BLOCK) -> torch.Tensor:
    """min_c KL(softmax(logits) ‖ exp(log_templates_c)) per row (N,), clamped at 0, in the logits' precision.

    Row blocks of about ``block`` numbers reuse two (rows × C) work buffers and one (rows × K) product buffer
    (fresh large allocations cost more than the arithmetic here)."""
    n, c = logits.shape
    like = {"dtype": logits.dtype, "device": logits.device}
    lt = log_templates.T.contiguous()
    rows = rows_within(n, max(c, lt.shape[1]), block)
    s_buf, e_buf, x_buf = torch.empty(rows, c, **like), torch.empty(rows, c, **like), torch.empty(rows, lt.shape[1], **like)
    out = torch.empty(n, **like)
    for i in range(0, n, rows):
        r = min(rows, n - i)
        f, s, e, x = logits[i:i + r], s_buf[:r], e_buf[:r], x_buf[:r]
        torch.sub(f, f.amax(1, keepdim=True), out=s)
        z = torch.exp(s, out=e).sum(1)                         # e = Z · p, with Z = Σ_j exp(f_j − max f)
        logp = s.sub_(z.log()[:, None])
        cross = torch.mm(e, lt, out=x).amax(1)                 # Z · max_c Σ_j p_j log d_cj
        neg_entropy = e.mul_(logp).sum(1)                      # Z · Σ p log p; 0 · log 0 = 0 (p underflows to 0)
        out[i:i + r] = neg_entropy.sub_(cross).div_(z)         # min_c KL = Σ p log p − max_c Σ p log d_c
    return out.clamp_min_(0)


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
        return min_kl_to_templates(f, self.log_templates_.to(f.device, f.dtype))
