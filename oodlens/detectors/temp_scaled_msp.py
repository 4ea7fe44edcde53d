"""Temperature-scaled maximum softmax probability: MSP (Hendrycks & Gimpel, ICLR 2017) after temperature scaling
(Guo, Pleiss, Sun, Weinberger — ICML 2017, "On Calibration of Modern Neural Networks").

    T* = argmin_T  (1/N) Σ_i [ log Σ_c exp(f_ic / T) − f_{i,y_i} / T ]      (NLL on ID validation logits)
    p  = softmax(f(x) / T*)
    score(x) = log(1 − max_c p_c) = logsumexp_{c ≠ ĉ}(f_c / T*) − logsumexp_c(f_c / T*),   ĉ = argmax_c f_c

MSP is a confidence (higher = more ID). The returned score is log(1 − MSP), a strictly increasing function of
the usual −MSP (identical rankings, AUROC, FPR, thresholds up to the same map), computed without forming
1 − MSP: with s_c = (f_c − max f) / T* and s₂ = max_{c≠ĉ} s_c,

    log(1 − MSP) = log S − log(1 + S),   log S = log Σ_{c≠ĉ} e^{s_c} = s₂ + log Σ_{c≠ĉ} e^{s_c − s₂}

where the last sum lies in [1, C − 1], so nothing underflows however confident the prediction; one pass over
row blocks of ``LOGIT_BLOCK`` numbers in one reused buffer. (Exponents below log of the smallest normal float
are raised to it before ``exp``, which is many times slower on underflowing results; the change to the sum is
below 1e-37 of it.) Deliberate difference from −MSP: after temperature scaling T* is often < 1, which pushes
many MSPs to exactly 1.0 in float32 and ties them; in log space they stay distinct and finite.

Fitting. ``fit`` sets T = 1 (plain MSP: training logits are over-fitted and would give a biased temperature);
``fit_validation`` (``validation_needs = "id"``) fits T on held-out ID validation logits and labels, as Guo et al.
and OpenOOD's ``TemperatureScalingPostprocessor`` do. The NLL is convex in β = 1/T (a log-sum-exp of functions
linear in β minus a linear term), so its derivative  mean_i[ Σ_c softmax(β f_i)_c f_ic − f_{i,y_i} ]  is monotone
and bisection on its sign over log β finds the global minimiser within ``[min_temperature, max_temperature]``
(defaults 0.01 and 100) to ~1e-12 relative, deterministically, in float64. If the minimum lies outside that range
the nearest bound is used and a warning says so: a validation set the model classifies perfectly has its NLL
falling all the way to T → 0 (no finite optimum). Deviation from the reference: OpenOOD runs LBFGS (lr 0.01,
50 iterations) from T = 1.5, which stops near the optimum; here the optimum itself is returned.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._logit_only import map_row_blocks
from .base import Detector

_CHUNK = 16384


def nll_slope(logits: torch.Tensor, labels: torch.Tensor, beta: float, chunk: int = _CHUNK) -> float:
    """d/dβ of the mean NLL of softmax(β · logits) at the true labels, in float64."""
    total = 0.0
    for i in range(0, logits.shape[0], chunk):
        f = logits[i:i + chunk].to(torch.float64)
        p = torch.softmax(beta * f, dim=1)
        total += float(((p * f).sum(1) - f.gather(1, labels[i:i + chunk, None]).squeeze(1)).sum())
    return total / logits.shape[0]


def _log1m_msp_block(f: torch.Tensor, temperature: float, e: torch.Tensor) -> torch.Tensor:
    """log(1 − max softmax(f / T)) of one row block, in the work buffer ``e`` (shaped like ``f``)."""
    top, idx = f.max(1, keepdim=True)
    s = torch.sub(f, top, out=e).div_(temperature).scatter_(1, idx, float("-inf"))  # s_c off the argmax
    second = s.amax(1, keepdim=True)                                     # the largest of them, s₂ ≤ 0
    # e^{s_c − s₂}; exponents (the argmax's −inf included) are floored just above the smallest normal number's
    # log, as exp is many times slower where its result underflows: a floored term adds < 1e-37 to a sum >= 1
    s.sub_(second).clamp_min_(math.log(torch.finfo(f.dtype).tiny) + 1.0).exp_()
    log_s = s.sum(1).log_().add_(second[:, 0])                          # log S = s₂ + log Σ e^{s_c − s₂}
    return log_s - torch.exp(log_s).log1p_()                            # log S − log(1 + S)


def log1m_max_softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log(1 − max_c softmax(logits / temperature)_c) per row (N,), exact when 1 − max softmax is below float
    precision (needs at least 2 columns), in row blocks with one reused buffer (no full-size temporary)."""
    return map_row_blocks(logits, lambda f, e: _log1m_msp_block(f, temperature, e))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, t_min: float = 0.01, t_max: float = 100.0,
                    tol: float = 1e-12) -> float:
    """The temperature in ``[t_min, t_max]`` minimising the NLL of ``softmax(logits / T)`` at ``labels``."""
    lo, hi = math.log(1.0 / t_max), math.log(1.0 / t_min)  # bracket on log β, β = 1/T
    if nll_slope(logits, labels, math.exp(lo)) >= 0:
        _warn_bound("max_temperature", t_max, "the logits barely predict the validation labels")
        return t_max
    if nll_slope(logits, labels, math.exp(hi)) <= 0:
        _warn_bound("min_temperature", t_min, "e.g. the model classifies every validation input correctly")
        return t_min
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if nll_slope(logits, labels, math.exp(mid)) > 0:
            hi = mid
        else:
            lo = mid
    return 1.0 / math.exp(0.5 * (lo + hi))


def _warn_bound(which: str, value: float, why: str) -> None:
    warnings.warn(f"the validation NLL is minimised at or beyond {which}={value} ({why}); using T={value}",
                  RuntimeWarning, stacklevel=5)


class TempScaledMSP(Detector):
    name = "temp_scaled_msp"
    validation_needs = "id"

    def __init__(self, min_temperature: float = 0.01, max_temperature: float = 100.0, logits: str = "logits"):
        self.min_temperature = min_temperature
        self.max_temperature = max_temperature
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.logits,)

    def _fit(self, train, labels, head, model) -> None:
        lo, hi = self.min_temperature, self.max_temperature
        ok = all(isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < math.inf for v in (lo, hi))
        if not ok or lo > hi:
            raise OODLensError(f"temperature bounds must satisfy 0 < min_temperature <= max_temperature < inf, "
                               f"got {lo!r} and {hi!r}")
        if train[self.logits].shape[1] < 2:
            raise OODLensError(f"TempScaledMSP needs at least 2 classes (logit columns), got {train[self.logits].shape[1]}")
        self.temperature_ = 1.0

    def _fit_validation(self, id_val, id_labels, ood_val) -> None:
        f = id_val[self.logits]
        want = self.feature_shapes_[self.logits]
        if list(f.shape[1:]) != list(want):
            raise OODLensError(f"validation feature {self.logits!r} has shape {tuple(f.shape)} but the detector "
                               f"was fitted on (N, {', '.join(map(str, want))})")
        if id_labels is None:
            raise OODLensError("TempScaledMSP needs ID validation labels to fit the temperature (id_labels=...)")
        if f.shape[0] == 0:
            raise OODLensError("ID validation features are empty (N=0)")
        if int(id_labels.max()) >= f.shape[1]:
            raise OODLensError(f"ID validation labels go up to {int(id_labels.max())} but the logits have "
                               f"{f.shape[1]} classes")
        self.temperature_ = fit_temperature(f, id_labels.to(f.device), float(self.min_temperature),
                                            float(self.max_temperature))

    def _score(self, x) -> torch.Tensor:
        return log1m_max_softmax(as_float(x[self.logits]), float(self.temperature_))
