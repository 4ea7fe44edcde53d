"""Multi-layer Mahalanobis ensemble (Lee, Lee, Lee & Shin, NeurIPS 2018, "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks"), without input pre-processing.

For each layer l (spatial maps are averaged over their spatial dimensions first), with class means μ_{l,c} and one
covariance Σ_l shared by the classes (from training features and labels, see ``_gaussian.py``):

    M_l(x) = max_c −½ (z_l − μ_{l,c})ᵀ Σ_l⁺ (z_l − μ_{l,c})          (the reference's per-layer confidence)
    score(x) = Σ_l w_l M_l(x) + b

The weights come from a logistic regression on validation data (``fit_validation`` with ID *and* OOD validation
features): OOD labelled 1, ID 0, sklearn's ``LogisticRegressionCV`` with the reference's defaults (10 values of
C, 5 stratified folds, L2 with an unpenalised intercept, accuracy), so the score is its decision function — a
monotone map of the reference's ``predict_proba[:, 1]`` — and higher = more OOD. This follows the reference code
(pokaxpoka/deep_Mahalanobis_detector: ``sample_estimator`` with true labels and a tied covariance from
``EmpiricalCovariance``, ``get_Mahalanobis_score`` at noise magnitude 0, ``merge_and_generate_labels(out, in)``
and ``LogisticRegressionCV(n_jobs=-1)`` in ``OOD_Regression_Mahalanobis.py``).

Differences: the solver is ``newton-cholesky`` — the same objective as the reference's default lbfgs, solved to
convergence (lbfgs tends to stop at its 100-iteration cap on these unscaled scores, and is far slower); no input
pre-processing (the reference also tunes a noise magnitude; that needs the model — see
``mahalanobis_noise``); with fewer than 5 validation samples of a kind the folds shrink, and below 2 a plain
``LogisticRegression()`` is fitted. Without validation OOD data (``fit_validation`` given ID data only, or not
called at all) the fallback is an equal-weight average of standardised layer scores,

    score(x) = (1/L) Σ_l (m_l − M_l(x)) / s_l

with m_l, s_l the mean and standard deviation of M_l on the ID validation data (on the training data when
``fit_validation`` is not called). Default layers: torchvision ResNet stage outputs ``layer1``..``layer4`` (pooled
or ``pool="none"`` maps); the reference also uses the stem output (add it, e.g. ``"relu"``, to ``layers``).
"""

from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np
import torch

from .._checks import as_float
from ..errors import OODLensError
from ._gaussian import check_covariance_choice, class_means, fit_whitener, min_sq_distance, tied_covariance
from ._shaping import pool_spatial
from .base import Detector


def _logistic_regression(x: np.ndarray, y: np.ndarray, cv: int) -> tuple[np.ndarray, float]:
    """Weights and intercept of LogisticRegressionCV (the reference's defaults) fitted on ``x``, ``y``."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    folds = min(int(cv), int(np.bincount(y.astype(np.int64)).min()))
    if folds >= 2:
        kwargs = {}
        if "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters:  # sklearn >= 1.8
            kwargs = {"l1_ratios": (0.0,), "scoring": "accuracy", "use_legacy_attributes": False}
        model = LogisticRegressionCV(Cs=10, cv=folds, solver="newton-cholesky", **kwargs).fit(x, y)
    else:
        model = LogisticRegression(solver="newton-cholesky").fit(x, y)
    return model.coef_.ravel().astype(np.float64), float(model.intercept_.ravel()[0])


class MultiLayerMahalanobis(Detector):
    name = "multi_mahalanobis"
    needs_labels = True
    spatial_inputs = True
    validation_needs = "id+ood"
    test_params = {"layers": ["block1", "block2_map"]}

    def __init__(self, layers: Sequence[str] = ("layer1", "layer2", "layer3", "layer4"), cv: int = 5,
                 covariance: str = "auto"):
        self.layers = list(layers)
        self.cv = cv
        self.covariance = check_covariance_choice(covariance)

    def required_features(self) -> tuple[str, ...]:
        return tuple(self.layers)

    # -- per-layer confidences --------------------------------------------------------------------------
    def _layer_scores(self, x) -> torch.Tensor:
        """M_l(x) for every row and layer, (N, L); non-finite values (features beyond float32's range once whitened)
        raise."""
        s = self._layer_scores_raw(x)
        if not bool(torch.isfinite(s).all()):
            raise OODLensError("multi_mahalanobis: a layer's Mahalanobis score overflowed float32; the features' scale "
                               "is too large or too small (rescale them)")
        return s

    def _layer_scores_raw(self, x) -> torch.Tensor:
        cols = []
        for i, name in enumerate(self.layers):
            z = pool_spatial(as_float(x[name]))
            cols.append(-0.5 * min_sq_distance(z, getattr(self, f"center_{i}_"), getattr(self, f"whiten_{i}_"),
                                               getattr(self, f"means_white_{i}_")))
        return torch.stack(cols, 1)

    def _set_equal_weights(self, s: torch.Tensor) -> None:
        s = s.to(torch.float64)
        if s.shape[0] < 2:
            raise OODLensError("multi_mahalanobis needs at least 2 ID samples to standardise the layer scores")
        mean, std = s.mean(0), s.std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))  # a constant layer score: leave it unscaled
        n_layers = s.shape[1]
        self.weights_ = -1.0 / (n_layers * std)
        self.bias_ = (mean / (n_layers * std)).sum().reshape(1)
        self.combination_ = "standardised-mean"

    # -- fit / score ---------------------------------------------------------------------------------------
    def _fit(self, train, labels, head, model) -> None:
        if not self.layers:
            raise OODLensError("multi_mahalanobis needs at least one layer name in layers=")
        if len(set(self.layers)) != len(self.layers):
            raise OODLensError(f"multi_mahalanobis: layers are repeated: {self.layers}")
        for i, name in enumerate(self.layers):
            z = pool_spatial(as_float(train[name]))
            means, _ = class_means(z, labels)
            w, shrink = fit_whitener(tied_covariance(z, labels, means), z.shape[0], self.covariance,
                                     f"covariance of layer {name!r}")
            setattr(self, f"shrinkage_{i}_", shrink)
            center = means.mean(0)
            setattr(self, f"center_{i}_", center.to(torch.float32))
            setattr(self, f"whiten_{i}_", w.to(torch.float32))
            setattr(self, f"means_white_{i}_", ((means - center) @ w).to(torch.float32))
        self._set_equal_weights(self._layer_scores(train))

    def _fit_validation(self, id_val, id_labels, ood_val) -> None:
        self._move_state(id_val[self.layers[0]].device)
        s_id = self._layer_scores(id_val)
        if ood_val is None or ood_val.n == 0:
            self._set_equal_weights(s_id)
            return
        if int(self.cv) < 1:
            raise OODLensError(f"multi_mahalanobis cv must be a positive number of folds, got {self.cv!r}")
        s_ood = self._layer_scores(ood_val)
        x = torch.cat([s_ood, s_id]).to(torch.float64).cpu().numpy()
        y = np.concatenate([np.ones(s_ood.shape[0]), np.zeros(s_id.shape[0])])
        coef, intercept = _logistic_regression(x, y, self.cv)
        device = s_id.device
        self.weights_ = torch.as_tensor(coef, dtype=torch.float64, device=device)
        self.bias_ = torch.tensor([intercept], dtype=torch.float64, device=device)
        self.combination_ = "logistic"

    def _score(self, x) -> torch.Tensor:
        s = self._layer_scores(x)
        return (s.to(torch.float64) @ self.weights_ + self.bias_).to(s.dtype)
