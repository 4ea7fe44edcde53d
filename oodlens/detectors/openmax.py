"""OpenMax (Bendale & Boult, CVPR 2016, "Towards Open Set Deep Networks").

Activation vectors (AV = the logits) are compared with per-class mean activation vectors (MAV); an extreme-value
(Weibull) model of each class's largest training distances says how unusual a distance is, and the top-α classes
hand part of their activation to an extra "unknown" class:

    MAV_c   = mean { v_i : y_i = c and argmax v_i = c }                  (correctly classified training logits)
    d_c(v)  = eu_weight · ‖v − MAV_c‖ + (1 − cos(v, MAV_c))              (distance="eucos")
    W_c     = Weibull fitted (libMR FitHigh) to the tail_size largest d_c of class c's correct training samples
    ω_c     = (α + 1 − r_c) / α  if v_c has rank r_c ≤ α among the logits (r = 1 is the largest), else 0
    v̂_c     = v_c · (1 − ω_c · W_c(d_c(v))),     v̂_0 = Σ_c (v_c − v̂_c)
    score(x) = P(unknown) = exp(v̂_0) / (exp(v̂_0) + Σ_c exp(v̂_c))          (higher = more OOD)

Checked against the authors' code (github.com/abhijitbendale/OSDN: compute_openmax.py, openmax_utils.py,
evt_fitting.py, preprocessing/*.py) and libMR (MetaRecognition.cpp, weibull.c). Defaults are the reference's:
``tail_size = 20`` (WEIBULL_TAIL_SIZE), ``alpha = 10`` (ALPHA_RANK; used as min(α, C) — the reference indexes out
of range when C < α), ``distance = "eucos"`` with the Euclidean part divided by 200 (``eu_weight = 1/200``);
``"euclidean"`` (eu_weight · ‖v − MAV‖) and ``"cosine"`` are the reference's alternatives (its euclidean option
divides by 200 when scoring but not when fitting the tails; here eu_weight applies to both). OpenOOD's port uses
α = 3 and plain Euclidean distance weighted 0.5; those are reachable through the parameters.

libMR's FitHigh convention, reproduced exactly: the tail (t = min(tail_size, n_c) largest distances) is shifted to
``x = d + 10000 − min(tail)`` (translate_amount = 10000, small_score = the smallest tail value), a two-parameter
Weibull is fitted by maximum likelihood (libMR solves the same likelihood equation on ``log x`` rescaled to
[−1, 0]), and ``W(d) = 1 − exp(−((d + 10000 − min(tail)) / scale)^shape)`` (0 below the shift). Here the likelihood
equation is solved for all classes at once by bisection to machine precision (libMR stops at a 1e-6 tolerance).
The reference averages over 10 crops ("channels"); one activation vector per sample is one channel.

Scores are returned in float64 so that very small unknown-probabilities of ID samples stay distinguishable; they
are computed in float64 row blocks that reuse two work buffers, and only the top-α entries of each row (the only
ones with ω_c > 0) get a distance and a Weibull probability. Fitting streams over row blocks too (masked class
sums for the MAVs, then distances block by block): no float64 or per-class copy of the training logits, so its
memory stays a fraction of the input. Arguments of ``exp`` are kept where its result is a normal float64 number
(float arithmetic on subnormal numbers is about a hundred times slower): W_c values below 1e-300 are set to 0,
above 1 − e^{−50} to 1, and e^{v̂_c − max} is floored at the smallest normal number; each changes a score by less
than float64 resolution. A class
needs at least 2 correctly classified training samples with distinct distances (libMR's fit fails otherwise);
fitting raises and names the classes.
"""

from __future__ import annotations

import math

import torch

from .._checks import as_float
from ..errors import OODLensError
from ._gaussian import block_rows, class_means
from .base import Detector

_DISTANCES = ("eucos", "euclidean", "cosine")
#: libMR's default translate_amount: tail data are shifted to start at this value before the Weibull fit
TRANSLATE = 10000.0
_BISECTION_STEPS = 100
_TINY = 1e-300
#: numbers per (rows × C) float64 work buffer when scoring in row blocks (4 MiB: few blocks, as each block is
#: some 40 small operations) and when fitting (2 MiB, a few temporaries per block)
_BLOCK, _FIT_BLOCK = 1 << 19, 1 << 18
#: W = 1 − exp(−e^z) is set to 0 where e^z < 1e-300 and is exactly 1 in float64 where e^z > 50: z is clamped to
#: this range, so exp and expm1 never produce subnormal numbers (their slow path)
_LOG_W_MIN, _LOG_W_MAX = math.log(1e-300), math.log(50.0)
#: log of float64's smallest normal number (with a margin): exp of anything below is floored there
_LOG_NORMAL = math.log(torch.finfo(torch.float64).tiny) + 1.0


# -- distances -------------------------------------------------------------------------------------------------
def distances_to_selected_means(v: torch.Tensor, dots: torch.Tensor, means: torch.Tensor, idx: torch.Tensor,
                                kind: str, eu_weight: float) -> torch.Tensor:
    """(N, K) distances between the rows of ``v`` (N, C) and the MAVs of the classes ``idx`` (N, K), given
    ``dots = v · MAV_idx`` (N, K); the Euclidean part by the expansion ‖v‖² + ‖m‖² − 2 v·m (clamped at 0)."""
    m_norm = means.norm(dim=1)[idx]
    v_norm = v.norm(dim=1, keepdim=True)
    cos = 1.0 - dots / (v_norm.clamp_min(_TINY) * m_norm.clamp_min(_TINY))
    if kind == "cosine":
        return cos
    eu = (m_norm.square() - 2.0 * dots + v_norm.square()).clamp_min_(0).sqrt_().mul_(eu_weight)
    return eu if kind == "euclidean" else eu.add_(cos)


def distances_to_own_mean(v: torch.Tensor, means: torch.Tensor, labels: torch.Tensor, kind: str,
                          eu_weight: float) -> torch.Tensor:
    """(N,) distance of each row of ``v`` to the MAV of its own class."""
    m = means[labels]
    cos = 1.0 - (v * m).sum(1) / (v.norm(dim=1) * m.norm(dim=1)).clamp_min(_TINY)
    if kind == "cosine":
        return cos
    eu = (v - m).norm(dim=1) * eu_weight
    return eu if kind == "euclidean" else eu + cos


# -- extreme-value fit ---------------------------------------------------------------------------------------------
def class_tails(values: torch.Tensor, classes: torch.Tensor, num_classes: int, tail: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``tail`` largest values of each class, descending: (C, T) padded with 0 and a (C, T) validity mask
    (T = min(tail, largest class count)). One sort, no loop over classes."""
    n = values.shape[0]
    order = torch.argsort(values, descending=True, stable=True)
    order = order[torch.argsort(classes[order], stable=True)]       # grouped by class, descending inside
    cls = classes[order]
    counts = torch.bincount(classes, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n, device=values.device) - starts[cls]
    keep = rank < tail
    width = max(1, min(tail, int(counts.max()) if n else 1))
    out = torch.zeros(num_classes, width, dtype=values.dtype, device=values.device)
    mask = torch.zeros(num_classes, width, dtype=torch.bool, device=values.device)
    out[cls[keep], rank[keep]] = values[order][keep]
    mask[cls[keep], rank[keep]] = True
    return out, mask


def fit_weibull_high(tails: torch.Tensor, mask: torch.Tensor, translate: float = TRANSLATE
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """libMR ``FitHigh`` on each row of ``tails`` (only where ``mask``), all rows at once, in float64.

    Returns ``(small_score, log_scale, inv_shape)`` per row: the smallest tail value, and the maximum-likelihood
    Weibull of ``x = tail + translate − small_score`` as ``log(scale)`` and ``1/shape``. Raises
    ``OODLensError`` for rows with fewer than 2 values or no spread.
    """
    t = tails.to(torch.float64)
    count = mask.sum(1).to(torch.float64)
    small = torch.where(mask, t, torch.full_like(t, math.inf)).amin(1)
    y = torch.log(torch.where(mask, t + translate - small[:, None], torch.ones_like(t)))
    y_max = torch.where(mask, y, torch.full_like(y, -math.inf)).amax(1)
    y_min = torch.where(mask, y, torch.full_like(y, math.inf)).amin(1)
    spread = y_max - y_min
    bad = ((count < 2) | ~(spread > 0)).nonzero().flatten().tolist()
    if bad:
        raise OODLensError(f"cannot fit a Weibull for class(es) {bad[:10]}: each needs at least 2 distinct tail values")
    # libMR's normalisation: max → 0, min → −1
    x0 = torch.where(mask, (y - y_max[:, None]) / spread[:, None], torch.zeros_like(y))
    x_bar = x0.sum(1) / count
    neg_inf = torch.full_like(x0, -math.inf)

    def likelihood_eq(sigma: torch.Tensor) -> torch.Tensor:
        # σ + x̄ − Σ x e^{x/σ} / Σ e^{x/σ}: strictly increasing in σ, < 0 as σ → 0 and > 0 at σ = 1
        a = torch.where(mask, x0 / sigma[:, None], neg_inf)
        e = torch.exp(a - a.amax(1, keepdim=True))             # the row maximum x0 = 0 is always valid
        return sigma + x_bar - (e * x0).sum(1) / e.sum(1)

    lo, hi = torch.zeros_like(x_bar), torch.ones_like(x_bar)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        below = likelihood_eq(mid) < 0
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    sigma = 0.5 * (lo + hi)
    mu = sigma * (torch.logsumexp(torch.where(mask, x0 / sigma[:, None], neg_inf), dim=1) - count.log())
    return small, spread * mu + y_max, spread * sigma


def weibull_cdf_high(d: torch.Tensor, small: torch.Tensor, log_scale: torch.Tensor, inv_shape: torch.Tensor,
                     translate: float = TRANSLATE) -> torch.Tensor:
    """libMR ``w_score`` of distances ``d`` (N, C) under the per-column models: 1 − exp(−(x/scale)^shape) with
    ``x = d + translate − small``, and 0 where x ≤ 0."""
    x = d + translate - small
    z = torch.log(x.clamp_min(_TINY)).sub_(log_scale).div_(inv_shape).clamp_(_LOG_W_MIN, _LOG_W_MAX)
    w = z.exp().neg_().expm1_().neg_()
    return w.masked_fill_((x <= 0) | (z <= _LOG_W_MIN), 0.0)      # below 1e-300: 0 (no subnormal numbers)


class OpenMax(Detector):
    name = "openmax"
    needs_labels = True
    param_grid = {"alpha": [1, 3, 5, 10], "tail_size": [10, 20, 50]}
    score_only_params = frozenset({"alpha"})

    def __init__(self, tail_size: int = 20, alpha: int = 10, distance: str = "eucos", eu_weight: float = 1 / 200,
                 logits: str = "logits"):
        self.tail_size = tail_size
        self.alpha = alpha
        self.distance = distance
        self.eu_weight = eu_weight
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.logits,)

    def _check_params(self) -> None:
        if self.distance not in _DISTANCES:
            raise OODLensError(f"distance must be one of {_DISTANCES}, got {self.distance!r}")
        if int(self.tail_size) < 2:
            raise OODLensError(f"tail_size must be >= 2 to fit a Weibull, got {self.tail_size}")
        if int(self.alpha) < 1:
            raise OODLensError(f"alpha must be >= 1, got {self.alpha}")
        if not float(self.eu_weight) > 0:
            raise OODLensError(f"eu_weight must be > 0, got {self.eu_weight}")

    def _fit(self, train, labels, head, model) -> None:
        self._check_params()
        v = as_float(train[self.logits])
        y = labels.to(v.device)
        n, c = v.shape
        if int(y.max()) >= c:
            raise OODLensError(f"OpenMax: labels go up to {int(y.max())} but the logits have only {c} classes")
        ok = v.argmax(1) == y
        empty = (torch.bincount(y[ok], minlength=c) == 0).nonzero().flatten().tolist()
        if empty:
            raise OODLensError(f"OpenMax: classes {empty[:10]} have no correctly classified training sample, so they "
                               "have no mean activation vector; train longer or drop those classes")
        mav, _ = class_means(v, y, c, mask=ok)                                 # float64 sums, block by block
        rows = block_rows(n, c, _FIT_BLOCK)
        d = torch.cat([distances_to_own_mean(v[i:i + rows][ok[i:i + rows]].to(torch.float64), mav,
                                             y[i:i + rows][ok[i:i + rows]], self.distance, float(self.eu_weight))
                       for i in range(0, n, rows)])
        tails, mask = class_tails(d, y[ok], c, int(self.tail_size))
        try:
            small, log_scale, inv_shape = fit_weibull_high(tails, mask)
        except OODLensError as e:
            raise OODLensError(f"OpenMax {e} (correctly classified training samples at distinct distances from the "
                               "class's mean activation vector)") from None
        self.mav_ = mav
        self.tail_min_, self.log_scale_, self.inv_shape_ = small, log_scale, inv_shape

    def _score(self, x) -> torch.Tensor:
        self._check_params()
        v = as_float(x[self.logits])
        n, c = v.shape
        rows = block_rows(n, c, _BLOCK)
        v_buf, e_buf = (torch.empty(rows, c, dtype=torch.float64, device=v.device) for _ in range(2))
        out = torch.empty(n, dtype=torch.float64, device=v.device)
        for i in range(0, n, rows):
            r = min(rows, n - i)
            out[i:i + r] = self._unknown_probability(v_buf[:r].copy_(v[i:i + r]), e_buf[:r])
        return out

    def _unknown_probability(self, v: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
        """P(unknown) per row of the float64 block ``v`` (overwritten), using ``work`` (same shape) as scratch.

        Only the top-α classes have ω_c > 0, so distances and Weibull probabilities are needed for those
        entries only; the other logits pass through unchanged."""
        a = min(int(self.alpha), v.shape[1])
        top, idx = v.topk(a, dim=1)
        dots = torch.mm(v, self.mav_.T, out=work).gather(1, idx)             # v · MAV_c of the top-α classes
        d = distances_to_selected_means(v, dots, self.mav_, idx, self.distance, float(self.eu_weight))
        w = weibull_cdf_high(d, self.tail_min_[idx], self.log_scale_[idx], self.inv_shape_[idx])
        omega = (a + 1 - torch.arange(1, a + 1, dtype=v.dtype, device=v.device)) / a
        moved = top * omega * w
        unknown = moved.sum(1, keepdim=True)
        v.scatter_(1, idx, top - moved)                                       # v̂: the revised activations
        m = torch.maximum(v.amax(1, keepdim=True), unknown)
        z = torch.sub(v, m, out=work).clamp_min_(_LOG_NORMAL).exp_().sum(1, keepdim=True) + (unknown - m).exp()
        return torch.exp(unknown - m - z.log())[:, 0]
