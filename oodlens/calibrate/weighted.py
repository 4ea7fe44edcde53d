"""Weighted conformal p-values under covariate shift, with likelihood-ratio weights estimated from *unlabelled*
inputs of the new site.

Tibshirani, Barber, Candès & Ramdas, "Conformal Prediction Under Covariate Shift", NeurIPS 2019 (weighted
exchangeability); as an outlier-test p-value (Jin & Candès, "Model-free selective inference under covariate
shift via weighted conformal p-values", 2023). The calibration inputs ``X_i`` follow ``P`` (the training sites),
ID test inputs follow ``Q`` with ``dQ/dP(x) ∝ w(x)`` (the same classes, another scanner). With scores ``s_i``:

    p(x) = ( Σ_i w(X_i) · 1{s_i ≥ s(x)} + w(x) ) / ( Σ_i w(X_i) + w(x) )

Guarantee (known ``w``): for an ID input from ``Q``, ``P(p(x) ≤ t) ≤ t`` — the weighted analogue of the marginal
conformal p-value (which is the case ``w ≡ 1``). The test point's own weight ``w(x)`` enters with the count of ties
(``≥``), which only makes p larger. Semantic OOD is still flagged: its score exceeds most weighted calibration
scores — as long as the input's own weight does not dominate: ``p ≥ w(x) / (Σ_i w(X_i) + w(x))`` whatever the
score, so on a nearly separable site (saturated weights) nothing can be flagged (:attr:`DomainWeights.min_pvalue_`,
with a warning at fit).

Estimated weights (:class:`DomainWeights`): a probabilistic domain classifier ``c(x) = P(new site | x)`` on
features — scikit-learn's L2 logistic regression on standardised features with balanced class weights, so that the
odds estimate the density ratio directly: ``ŵ(x) = c(x) / (1 − c(x)) ≈ q(x) / p(x)``.

* **cross-fitted**: calibration and unlabelled rows are cut into ``folds`` folds; each row's weight comes from
  the classifier fitted on the other folds (no row weighs itself); new inputs get the mean probability of the
  fold classifiers;
* optionally on the first ``components`` principal directions of the pooled standardised features (a
  lower-variance classifier when there are few unlabelled inputs and many feature dimensions);
* **clipped**: ``c`` is clipped to ``[clip, 1 − clip]`` (weights in ``[clip/(1−clip), (1−clip)/clip]``), which
  bounds the influence of one calibration row and the variance of the p-value at the price of a bias where the
  sites barely overlap;
* **effective sample size** of the calibration weights, ``ESS = (Σ w_i)² / Σ w_i²`` (Kish), reported: it is the
  number of calibration inputs the weighted p-value effectively rests on; a small ESS (≪ n) means the new site
  is far outside the calibration sites and the guarantee rests on few inputs.

With estimated weights the guarantee is approximate (its error grows with the weight estimation error; Lei &
Candès 2021, Thm. 3): ``tests/test_calibrate_weighted*.py`` and :func:`oodlens.calibrate.shift_simulation.simulate_shift_validity`
measure the realised false-alarm rate under a known shift.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .._checks import as_float, as_scores, check_finite
from ..errors import NotFittedError, OODLensError
from .pvalues import describe_degree


def weighted_pvalues(cal_scores: Any, cal_weights: Any, scores: Any, weights: Any) -> torch.Tensor:
    """``p = (Σ_i w_i 1{s_i ≥ s} + w) / (Σ_i w_i + w)`` per test score (float64, shape of ``scores``).

    ``cal_scores``/``cal_weights`` (n,), ``scores``/``weights`` (m,) — or (..., n) and (..., m) with shared
    leading dimensions (one calibration set per row, for simulations). Weights must be ≥ 0 and finite."""
    cal = as_scores(cal_scores, "calibration scores", batched=True).to(torch.float64)
    w_cal = as_scores(cal_weights, "calibration weights", batched=True).to(torch.float64)
    s = as_scores(scores, "scores", batched=True).to(torch.float64)
    w = as_scores(weights, "test weights", batched=True).to(torch.float64)
    if w_cal.shape != cal.shape or w.shape != s.shape:
        raise OODLensError(f"weights must match their scores: calibration {tuple(w_cal.shape)} vs "
                           f"{tuple(cal.shape)}, test {tuple(w.shape)} vs {tuple(s.shape)}")
    if bool((w_cal < 0).any()) or bool((w < 0).any()):
        raise OODLensError("weights must be non-negative")
    order = cal.argsort(-1)
    cal_sorted = cal.gather(-1, order)
    w_sorted = w_cal.gather(-1, order)
    # tail[j] = Σ_{i ≥ j} w_(i) (ascending order), tail[n] = 0
    tail = torch.cat([w_sorted.flip(-1).cumsum(-1).flip(-1), torch.zeros_like(w_sorted[..., :1])], -1)
    if cal.ndim == 1:
        below = torch.searchsorted(cal_sorted, s.reshape(-1), side="left").reshape(s.shape)
        above = tail[below]
    else:
        below = torch.searchsorted(cal_sorted.contiguous(), s.contiguous(), side="left")
        above = tail.gather(-1, below)
    total = tail[..., :1]
    if bool(((total + w) == 0).any()):  # 0/0: no calibration weight and a zero test weight
        raise OODLensError("weights sum to 0 (all calibration weights and a test weight are 0): the weighted "
                           "p-value is undefined")
    return ((above + w) / (total + w)).clamp(0.0, 1.0)


def effective_sample_size(weights: Any) -> float:
    """Kish's effective sample size ``(Σ w)² / Σ w²`` of non-negative weights."""
    w = as_scores(weights, "weights").to(torch.float64)
    sq = float((w * w).sum())
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0


class DomainWeights:
    """Likelihood ratio ``q(x)/p(x)`` between a new site (unlabelled ``target`` features) and the calibration
    sites (``source`` features), from a cross-fitted, clipped logistic domain classifier (module docstring).

    >>> dw = DomainWeights(folds=5, clip=0.01).fit(cal_features, new_site_features)
    >>> dw.source_weights_, dw.ess_            # cross-fitted calibration weights, their effective sample size
    >>> dw.weights(batch_features)             # weights of new inputs (mean of the fold classifiers)
    """

    def __init__(self, folds: int = 5, clip: float = 0.01, c: float = 1.0, max_iter: int = 500, seed: int = 0,
                 components: int | None = None):
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise OODLensError(f"folds must be an integer ≥ 2, got {folds!r}")
        if not 0.0 < float(clip) < 0.5:
            raise OODLensError(f"clip must be in (0, 0.5), got {clip!r}")
        if not float(c) > 0:
            raise OODLensError(f"c (inverse L2 strength) must be > 0, got {c!r}")
        if components is not None and (isinstance(components, bool) or not isinstance(components, int)
                                       or components < 1):
            raise OODLensError(f"components must be a positive integer or None, got {components!r}")
        self.folds, self.clip, self.c, self.max_iter, self.seed = folds, float(clip), float(c), int(max_iter), seed
        self.components = components

    @staticmethod
    def _matrix(x: Any, name: str) -> np.ndarray:
        t = as_float(x, name)
        if t.ndim != 2:
            raise OODLensError(f"{name} must be (N, D), got shape {tuple(t.shape)}")
        check_finite(t, name)
        return t.detach().double().cpu().numpy()

    def _fold_ids(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(np.arange(n) % self.folds)

    def fit(self, source: Any, target: Any) -> "DomainWeights":
        """Fit on calibration-site features ``source`` (n, D) and unlabelled new-site features ``target`` (m, D).

        BLAS runs single-threaded here: the problems are small, and threads only contend on a busy machine."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            self._fit(source, target)
        if self.min_pvalue_ > 0.05:
            warnings.warn(
                f"the new site is nearly separable from the calibration data (domain AUROC {self.domain_auroc_:.3f}): "
                f"half of its unlabelled inputs get a weight ≥ {float(torch.median(self.target_weights_)):.3g} "
                f"against {float(self.source_weights_.sum()):.3g} for all calibration inputs together, so their "
                f"weighted p-values cannot fall below {self.min_pvalue_:.3f}: such inputs cannot be flagged at "
                "α = 0.05 whatever their score (the effective sample size does not show this). Calibrate on data "
                "from this site instead.", stacklevel=2)
        return self

    def _fit(self, source: Any, target: Any) -> "DomainWeights":
        from sklearn.linear_model import LogisticRegression

        xs, xt = self._matrix(source, "source features"), self._matrix(target, "target features")
        if xs.shape[1] != xt.shape[1]:
            raise OODLensError(f"source and target features differ in width: {xs.shape[1]} vs {xt.shape[1]}")
        if min(len(xs), len(xt)) < self.folds:
            raise OODLensError(f"cross-fitting with {self.folds} folds needs ≥ {self.folds} rows on each side, got "
                               f"{len(xs)} source and {len(xt)} target rows")
        both = np.concatenate([xs, xt])
        self.mean_, self.std_ = both.mean(0), both.std(0) + 1e-12
        self.basis_ = None
        if self.components is not None and self.components < xs.shape[1]:
            # principal directions of the pooled, standardised rows (unsupervised: no domain label is used)
            _, _, vt = np.linalg.svd((both - self.mean_) / self.std_, full_matrices=False)
            self.basis_ = vt[:self.components].T
        zs, zt = self._project(xs), self._project(xt)
        rng = np.random.default_rng(self.seed)
        fs, ft = self._fold_ids(len(xs), rng), self._fold_ids(len(xt), rng)
        prob_s, prob_t = np.empty(len(xs)), np.empty(len(xt))
        coefs, intercepts = [], []
        for k in range(self.folds):
            x = np.concatenate([zs[fs != k], zt[ft != k]])
            y = np.concatenate([np.zeros(int((fs != k).sum())), np.ones(int((ft != k).sum()))])
            clf = LogisticRegression(C=self.c, class_weight="balanced", max_iter=self.max_iter)
            clf.fit(x, y)
            coefs.append(clf.coef_[0].copy())
            intercepts.append(float(clf.intercept_[0]))
            prob_s[fs == k] = clf.predict_proba(zs[fs == k])[:, 1]
            prob_t[ft == k] = clf.predict_proba(zt[ft == k])[:, 1]
        self.coef_, self.intercept_ = np.stack(coefs), np.asarray(intercepts)  # the fold classifiers, (K, d), (K,)
        self.source_weights_ = self._odds(prob_s)
        self.target_weights_ = self._odds(prob_t)
        self.ess_ = effective_sample_size(self.source_weights_)
        self.n_source_, self.n_target_ = len(xs), len(xt)
        # held-out domain-classifier AUROC: 0.5 = the sites look alike, 1 = fully separable (weights degenerate)
        from ..metrics import auroc

        self.domain_auroc_ = float(auroc(prob_s, prob_t))
        return self

    def _project(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean_) / self.std_
        return z if self.basis_ is None else z @ self.basis_

    def _odds(self, prob: np.ndarray) -> torch.Tensor:
        c = np.clip(prob, self.clip, 1.0 - self.clip)
        return torch.from_numpy(c / (1.0 - c))

    def weights(self, features: Any) -> torch.Tensor:
        """Weights (float64, (N,)) of new inputs: clipped odds of the fold classifiers' mean probability."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("DomainWeights is not fitted; call fit(source, target) first")
        x = self._matrix(features, "features")
        if x.shape[1] != len(self.mean_):
            raise OODLensError(f"features have width {x.shape[1]}, the domain classifier was fitted on {len(self.mean_)}")
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            z = self._project(x)
            prob = (1.0 / (1.0 + np.exp(-(z @ self.coef_.T + self.intercept_)))).mean(1)
        return self._odds(prob)

    def state(self) -> dict[str, torch.Tensor]:
        """Fitted state as tensors (safetensors-friendly; no pickle): everything :meth:`weights` and the
        calibration weights need."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("DomainWeights is not fitted; call fit(source, target) first")
        out = {"coef": self.coef_, "intercept": self.intercept_, "mean": self.mean_, "std": self.std_,
               "source_weights": self.source_weights_.numpy(), "target_weights": self.target_weights_.numpy(),
               "settings": np.array([self.clip, self.ess_, self.domain_auroc_, self.n_source_, self.n_target_])}
        if self.basis_ is not None:
            out["basis"] = self.basis_
        return {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in out.items()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "DomainWeights":
        """Rebuild from :meth:`state` (checked: every tensor present, shapes consistent)."""
        need = ("coef", "intercept", "mean", "std", "source_weights", "target_weights", "settings")
        missing = [k for k in need if k not in state]
        if missing:
            raise OODLensError(f"domain weights state lacks {missing}")
        a = {k: v.double().numpy() for k, v in state.items()}
        clip, ess, dauc, n_s, n_t = a["settings"].tolist()
        width = a["coef"].shape[1] if a["coef"].ndim == 2 else -1
        proj = a["basis"].shape[1] if "basis" in a else a["mean"].shape[0]
        if a["coef"].ndim != 2 or width != proj or a["intercept"].shape != (a["coef"].shape[0],) \
                or a["source_weights"].shape != (int(n_s),) or not 0 < clip < 0.5:
            raise OODLensError("domain weights state is inconsistent (edited or corrupted)")
        dw = cls(folds=max(2, a["coef"].shape[0]), clip=clip)
        dw.coef_, dw.intercept_, dw.mean_, dw.std_ = a["coef"], a["intercept"], a["mean"], a["std"]
        dw.basis_ = a.get("basis")
        dw.source_weights_ = torch.from_numpy(a["source_weights"])
        dw.target_weights_ = torch.from_numpy(a["target_weights"])
        dw.ess_, dw.domain_auroc_, dw.n_source_, dw.n_target_ = ess, dauc, int(n_s), int(n_t)
        return dw

    @property
    def ess_fraction(self) -> float:
        return self.ess_ / self.n_source_

    @property
    def min_pvalue_(self) -> float:
        """The smallest weighted p-value the median unlabelled input of the new site can reach (its score above
        every calibration score): ``w / (Σ_i w_i + w)`` at its weight ``w``. Above α, the site's inputs cannot be
        flagged at level α — what happens when the site is nearly separable and the clipped weights saturate."""
        if not hasattr(self, "target_weights_"):
            raise NotFittedError("DomainWeights is not fitted; call fit(source, target) first")
        w = float(torch.median(self.target_weights_))
        return w / (float(self.source_weights_.sum()) + w)


class WeightedCalibrator:
    """Weighted conformal p-values for inputs of one new site (module docstring).

    >>> wc = WeightedCalibrator(det.score(x_cal), cal_features, new_site_unlabelled_features)
    >>> wc.pvalues(det.score(x), features_of_x)      # valid for ID inputs of the new site (weights permitting)
    >>> wc.ess, wc.describe(det.score(x), features_of_x)
    >>> WeightedCalibrator(other_det.score(x_cal), domain=wc.domain)   # same site weights, another detector
    """

    def __init__(self, cal_scores: Any, cal_features: Any = None, target_features: Any = None,
                 site: str = "new site", folds: int = 5, clip: float = 0.01, c: float = 1.0, seed: int = 0,
                 domain: DomainWeights | None = None):
        self.scores = as_scores(cal_scores, "calibration scores").to(torch.float64)
        if domain is None:
            if cal_features is None or target_features is None:
                raise OODLensError("WeightedCalibrator needs cal_features and target_features (unlabelled inputs of "
                                   "the new site), or a fitted domain=DomainWeights(...)")
            domain = DomainWeights(folds, clip, c, seed=seed).fit(cal_features, target_features)
        elif not hasattr(domain, "coef_"):
            raise NotFittedError("domain (DomainWeights) is not fitted; call fit(source, target) first")
        self.domain = domain
        if self.domain.n_source_ != self.scores.numel():
            raise OODLensError(f"{self.scores.numel()} calibration scores but {self.domain.n_source_} calibration "
                               f"feature rows")
        self.cal_weights = self.domain.source_weights_
        self.site = str(site)
        self.n = int(self.scores.numel())

    @property
    def ess(self) -> float:
        return self.domain.ess_

    def pvalues(self, scores: Any, features: Any = None, weights: Any = None) -> torch.Tensor:
        """Weighted p-values of ``scores``; the test weights come from ``features`` (or are given as ``weights``)."""
        s = as_scores(scores, "scores").to(torch.float64).reshape(-1)
        w = self.domain.weights(features) if weights is None else as_scores(weights, "weights").to(torch.float64)
        if w.shape != s.shape:
            raise OODLensError(f"{s.numel()} scores but {w.numel()} weights / feature rows")
        return weighted_pvalues(self.scores, self.cal_weights, s, w)

    def degree(self, scores: Any, features: Any = None, weights: Any = None) -> torch.Tensor:
        return 1.0 - self.pvalues(scores, features, weights)

    def describe(self, scores: Any, features: Any = None, weights: Any = None) -> list[str]:
        """One line per input: the degree and the *weighted* calibration quantile in words."""
        deg = self.degree(scores, features, weights)
        out = []
        for d in deg.tolist():
            share = max(0.0, min(1.0, d))
            line = describe_degree([0], 1, [d])[0].split(":")[0]
            out.append(f"{line}: more atypical than {100 * share:.1f} % of {self.n} calibration samples reweighted "
                       f"to look like {self.site} (effective sample size {self.ess:.0f})")
        return out


__all__ = ["DomainWeights", "WeightedCalibrator", "effective_sample_size", "weighted_pvalues"]
