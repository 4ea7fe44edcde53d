"""SHE, Simplified Hopfield Energy (Zhang et al., ICLR 2023, "Out-of-distribution Detection based on
In-distribution Data Patterns Memorization with Modern Hopfield Energy").

One stored pattern per class — the mean penultimate feature of the training samples of that class that the model
classifies correctly — and a test sample is compared with the pattern of the class it is predicted as:

    P_c = mean { z_i : y_i = c and argmax f(x_i) = c }
    ŷ = argmax_c f_c(x)
    score(x) = − z · P_ŷ                       (metric="inner_product", the paper's SHE)

The paper's energy (higher = more ID) is negated so that higher means more OOD. With one stored pattern per class,
the reference's Hopfield energy ``logsumexp_j (P_ŷ,j · z)`` over the class's patterns is just ``P_ŷ · z``.
Checked against the official code (github.com/zjs975584714/SHE_ood_detection: generate_stored_pattern.py,
Utils/score_calculation.py) and OpenOOD's she_postprocessor, whose default ``metric: inner_product`` is the default
here; OpenOOD's alternatives are offered too: ``"cosine"`` (score = −cos(z, P_ŷ)) and ``"euclidean"``
(score = ‖z − P_ŷ‖). The predicted class comes from the ``logits`` feature, as in the reference.

Every class must have at least one correctly classified training sample (the reference would average an empty
set); otherwise fitting raises and names the classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import as_float
from ..errors import OODLensError
from ._gaussian import class_means
from ._neighbours import rescale_rows
from .base import Detector

_METRICS = ("inner_product", "cosine", "euclidean")


def correct_class_means(x: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, method: str) -> torch.Tensor:
    """Per-class mean (C, D), float64, of the rows of ``x`` whose label equals the logits' argmax (C = logit
    columns). Raises when a label is out of range or a class has no correctly classified sample."""
    c = logits.shape[1]
    if int(labels.max()) >= c:
        raise OODLensError(f"{method}: labels go up to {int(labels.max())} but the logits have only {c} classes")
    ok = logits.argmax(1) == labels
    counts = torch.bincount(labels[ok], minlength=c)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise OODLensError(f"{method}: classes {empty[:10]} have no correctly classified training sample, so they "
                           "have no stored pattern; train longer or drop those classes")
    return class_means(x, labels, c, mask=ok)[0]  # no copy of the selected rows


class SHE(Detector):
    name = "she"
    needs_labels = True
    param_grid = {"metric": list(_METRICS)}
    score_only_params = frozenset({"metric"})
    #: the toy problem's features are non-negative (ReLU) with equal norms for ID and OOD, where the raw inner
    #: product barely separates (AUROC ≈ 0.58); the common suite checks the plumbing with the cosine variant and
    #: tests/test_det_she.py checks the default's values
    test_params = {"metric": "cosine"}

    def __init__(self, metric: str = "inner_product", features: str = "features", logits: str = "logits"):
        self.metric = metric
        self.features = features
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.features, self.logits)

    def _check_metric(self) -> None:
        if self.metric not in _METRICS:
            raise OODLensError(f"metric must be one of {_METRICS}, got {self.metric!r}")

    def _fit(self, train, labels, head, model) -> None:
        self._check_metric()
        z = as_float(train[self.features])
        means = correct_class_means(z, labels.to(z.device), as_float(train[self.logits]), "SHE")
        p32 = means.to(torch.float32)  # float32 unless the (float64) features are beyond its range
        self.patterns_ = p32 if bool(torch.isfinite(p32).all()) else means

    def _score(self, x) -> torch.Tensor:
        self._check_metric()
        z = as_float(x[self.features])
        patterns = self.patterns_.to(z.dtype)[as_float(x[self.logits]).argmax(1)]
        if self.metric == "inner_product":
            return -(z * patterns).sum(1)
        if self.metric == "cosine":  # rows rescaled first: norms of ~1e30 or ~1e-30 features neither over- nor underflow
            return -F.cosine_similarity(rescale_rows(z), rescale_rows(patterns), dim=1)
        return (z - patterns).norm(dim=1)
