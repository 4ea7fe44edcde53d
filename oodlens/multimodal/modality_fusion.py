"""Per-modality OOD detectors, fusion of their scores, and attribution (which modality looks out of distribution).

Any registered detector is fitted once per modality on that modality's features (``<m>/logits``,
``<m>/features``, read under their unprefixed names). Raw scores of different modalities live on different
scales, so each is calibrated on held-out **ID validation** data (never the training rows: a KNN or Mahalanobis
score is optimistic on the rows it was fitted on). For modality m with calibration scores ``c_1 … c_n``:

    z_m(x) = (s_m(x) − mean(c)) / std(c)                         standardised score (std with n − 1)
    p_m(x) = (1 + #{i : c_i ≥ s_m(x)}) / (n + 1)                 conformal p-value (small = unusual)

and the fused OOD score (higher = more OOD) is one of

    "max_z":  max_m z_m             "mean_z": mean_m z_m
    "min_p":  −log min_m p_m        "fisher": −2 Σ_m log p_m     (Fisher's combination statistic)

Attribution reports every modality's ``z_m`` (and ``p_m``) and the modality with the largest z — the one whose
score is most unusual relative to its own ID calibration. ``z`` is an ID-relative scale, not a probability;
``p_m`` is a valid conformal p-value for exchangeable ID data.

This module keeps only what is specific to modalities (which features belong to which modality, attribution):
the calibration state and the z rules are :mod:`oodlens.fusion`'s, the p-values :mod:`oodlens.calibrate`'s
(so the calibration-conditional variants work per modality too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from .._checks import check_delta
from ..calibrate.pvalues import PVALUE_METHODS
from ..detectors import create, get_detector
from ..detectors.base import Detector
from ..errors import NotFittedError, OODLensError
from ..features import Features
from ..fusion.rules import P_STATISTICS, apply_rule, fit_rule, member_pvalues, pvalue_statistic, stack_scores

#: modality fusion rule -> how it is computed: a fusion rule on z-scores, or a statistic of the p-values
FUSION_RULES = ("max_z", "mean_z", "min_p", "fisher")
_Z_RULES = {"max_z": "zscore_max", "mean_z": "zscore"}


def _stack(scores: Mapping[str, Any], modalities: Sequence[str]) -> torch.Tensor:
    missing = [m for m in modalities if m not in scores]
    if missing:
        raise OODLensError(f"scores lack modalities {missing} (given: {sorted(scores)})")
    return stack_scores({m: scores[m] for m in modalities}, "modality scores")[0]


@dataclass
class Attribution:
    """Per-row, per-modality standardised scores and p-values, and the most unusual modality."""

    modalities: list[str]
    z: torch.Tensor  # (N, M)
    p: torch.Tensor  # (N, M)

    @property
    def top_index(self) -> torch.Tensor:
        return self.z.argmax(1)

    @property
    def top(self) -> list[str]:
        return [self.modalities[i] for i in self.top_index.tolist()]

    def share(self) -> dict[str, float]:
        """Fraction of rows attributed to each modality."""
        counts = torch.bincount(self.top_index, minlength=len(self.modalities)).to(torch.float64)
        return {m: float(c) / max(self.z.shape[0], 1) for m, c in zip(self.modalities, counts)}


class ModalityCalibration:
    """Per-modality ID calibration of raw scores: z-scores, conformal p-values, fusion and attribution.

    The calibration state is :func:`oodlens.fusion.rules.fit_rule`'s (means, standard deviations, sorted scores);
    p-values come from :mod:`oodlens.calibrate` (``pvalues="marginal"``, or the calibration-conditional
    ``"simes"`` / ``"dkw"`` with ``delta``)."""

    def __init__(self, modalities: Sequence[str], pvalues: str = "marginal", delta: float = 0.1):
        self.modalities = list(modalities)
        if len(self.modalities) < 1:
            raise OODLensError("ModalityCalibration needs at least one modality")
        if pvalues not in PVALUE_METHODS:
            raise OODLensError(f"unknown p-value method {pvalues!r}; use one of {', '.join(PVALUE_METHODS)}")
        self.pvalue_method = pvalues
        self.delta = check_delta(delta)
        self.state_: dict[str, torch.Tensor] | None = None

    def fit(self, calibration: Mapping[str, Any]) -> "ModalityCalibration":
        """``calibration``: modality → raw scores (higher = more OOD) of held-out ID data."""
        cal = _stack(calibration, self.modalities)
        if cal.shape[0] < 2:
            raise OODLensError(f"calibration needs at least 2 ID scores per modality, got {cal.shape[0]}")
        flat = [m for m, sd in zip(self.modalities, cal.std(0).tolist()) if not sd > 0]
        if flat:
            raise OODLensError(f"calibration scores of modalities {flat} are constant; cannot standardise them")
        self.state_ = fit_rule(cal, "zscore", names=self.modalities)
        return self

    def _prepare(self, scores: Mapping[str, Any]) -> torch.Tensor:
        if self.state_ is None:
            raise NotFittedError("ModalityCalibration is not fitted; call fit(calibration_scores) first")
        return _stack(scores, self.modalities)

    def zscores(self, scores: Mapping[str, Any]) -> torch.Tensor:
        s = self._prepare(scores)
        return (s - self.state_["mean"].to(s.device)) / self.state_["std"].to(s.device)

    def pvalues(self, scores: Mapping[str, Any]) -> torch.Tensor:
        return member_pvalues(self._prepare(scores), self.state_["cal_sorted"], self.pvalue_method, self.delta)

    def fuse(self, scores: Mapping[str, Any], rule: str = "max_z") -> torch.Tensor:
        """Fused OOD score (N,), higher = more OOD."""
        if rule in _Z_RULES:
            return apply_rule(self._prepare(scores), _Z_RULES[rule], self.state_)
        if rule in P_STATISTICS:
            return pvalue_statistic(self.pvalues(scores), rule)
        raise OODLensError(f"unknown fusion rule {rule!r}; choose one of {', '.join(FUSION_RULES)}")

    def attribute(self, scores: Mapping[str, Any]) -> Attribution:
        return Attribution(self.modalities, self.zscores(scores), self.pvalues(scores))


class ModalityWiseDetector:
    """One detector per modality, calibrated on ID validation data and fused into one score.

    >>> mw = ModalityWiseDetector("energy", ["video", "flow"], rule="max_z")
    >>> mw.fit(train_feats, labels, heads=model.all_heads()).calibrate(val_feats)
    >>> mw.score(test_feats); mw.attribute(test_feats).top        # fused score; most unusual modality per row
    """

    def __init__(self, detector: str | Detector, modalities: Sequence[str], rule: str = "max_z",
                 **params: Any):
        if rule not in FUSION_RULES:
            raise OODLensError(f"unknown fusion rule {rule!r}; choose one of {', '.join(FUSION_RULES)}")
        self.rule = rule
        self.modalities = list(modalities)
        if isinstance(detector, Detector):
            self._template = detector.clone(**params)
        else:
            get_detector(detector)  # clear error for unknown names
            self._template = create(detector, **params)
        self.detectors_: dict[str, Detector] = {}
        self.calibration_: ModalityCalibration | None = None

    @property
    def name(self) -> str:
        return f"{self._template.name}[{self.rule}]"

    def fit(self, train: Features, labels: Any = None, heads: Mapping[str, Any] | None = None) -> "ModalityWiseDetector":
        """Fit a clone of the detector on each modality's features (``heads``: modality → head, if needed)."""
        for m in self.modalities:
            det = self._template.clone()
            head = (heads or {}).get(m)
            if det.needs_model:
                raise OODLensError(f"{type(det).__name__} needs the model itself; not supported per modality")
            det.fit(train.modality(m), labels, head=head)
            self.detectors_[m] = det
        return self

    def modality_scores(self, x: Features, batch_size: int | None = None) -> dict[str, torch.Tensor]:
        if not self.detectors_:
            raise NotFittedError("ModalityWiseDetector is not fitted; call fit(...) first")
        return {m: self.detectors_[m].score(x.modality(m), batch_size) for m in self.modalities}

    def calibrate(self, id_val: Features) -> "ModalityWiseDetector":
        """Standardise each modality's score on held-out ID validation features."""
        self.calibration_ = ModalityCalibration(self.modalities).fit(self.modality_scores(id_val))
        return self

    def _cal(self) -> ModalityCalibration:
        if self.calibration_ is None:
            raise NotFittedError("ModalityWiseDetector is not calibrated; call calibrate(id_validation_features)")
        return self.calibration_

    def score(self, x: Features, batch_size: int | None = None) -> torch.Tensor:
        """Fused OOD score (N,), higher = more OOD."""
        return self._cal().fuse(self.modality_scores(x, batch_size), self.rule).to(torch.float32)

    def attribute(self, x: Features, batch_size: int | None = None) -> Attribution:
        return self._cal().attribute(self.modality_scores(x, batch_size))
