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

p-values are computed by binary search in the sorted calibration scores (no test × calibration matrix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..detectors import create, get_detector
from ..detectors.base import Detector
from ..errors import NotFittedError, OODLensError
from ..features import Features

FUSION_RULES = ("max_z", "mean_z", "min_p", "fisher")


def _stack(scores: Mapping[str, Any], modalities: Sequence[str]) -> torch.Tensor:
    missing = [m for m in modalities if m not in scores]
    if missing:
        raise OODLensError(f"scores lack modalities {missing} (given: {sorted(scores)})")
    cols = [torch.as_tensor(scores[m]).detach().to(torch.float64).reshape(-1) for m in modalities]
    n = {c.shape[0] for c in cols}
    if len(n) != 1:
        raise OODLensError(f"modality scores disagree on N: { {m: c.shape[0] for m, c in zip(modalities, cols)} }")
    out = torch.stack(cols, 1)
    if not bool(torch.isfinite(out).all()):
        raise OODLensError("modality scores contain non-finite values")
    return out


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
    """Per-modality ID calibration of raw scores: z-scores, conformal p-values, fusion and attribution."""

    def __init__(self, modalities: Sequence[str]):
        self.modalities = list(modalities)
        if len(self.modalities) < 1:
            raise OODLensError("ModalityCalibration needs at least one modality")

    def fit(self, calibration: Mapping[str, Any]) -> "ModalityCalibration":
        """``calibration``: modality → raw scores (higher = more OOD) of held-out ID data."""
        cal = _stack(calibration, self.modalities)
        if cal.shape[0] < 2:
            raise OODLensError(f"calibration needs at least 2 ID scores per modality, got {cal.shape[0]}")
        self.mean_ = cal.mean(0)
        self.std_ = cal.std(0)
        flat = [m for m, s in zip(self.modalities, self.std_.tolist()) if not s > 0]
        if flat:
            raise OODLensError(f"calibration scores of modalities {flat} are constant; cannot standardise them")
        self.sorted_ = torch.sort(cal, 0).values
        return self

    def _prepare(self, scores: Mapping[str, Any]) -> torch.Tensor:
        """Stacked scores (N, M) in float64; the calibration state follows their device."""
        if not hasattr(self, "mean_"):
            raise NotFittedError("ModalityCalibration is not fitted; call fit(calibration_scores) first")
        s = _stack(scores, self.modalities)
        for k in ("mean_", "std_", "sorted_"):
            if getattr(self, k).device != s.device:
                setattr(self, k, getattr(self, k).to(s.device))
        return s

    def zscores(self, scores: Mapping[str, Any]) -> torch.Tensor:
        s = self._prepare(scores)
        return (s - self.mean_) / self.std_

    def pvalues(self, scores: Mapping[str, Any]) -> torch.Tensor:
        s = self._prepare(scores)
        n = self.sorted_.shape[0]
        out = torch.empty_like(s)
        for j in range(s.shape[1]):  # one binary search per modality (M is small)
            below = torch.searchsorted(self.sorted_[:, j].contiguous(), s[:, j].contiguous(), right=False)
            out[:, j] = (1 + (n - below)).to(torch.float64) / (n + 1)
        return out

    def fuse(self, scores: Mapping[str, Any], rule: str = "max_z") -> torch.Tensor:
        """Fused OOD score (N,), higher = more OOD."""
        if rule == "max_z":
            return self.zscores(scores).amax(1)
        if rule == "mean_z":
            return self.zscores(scores).mean(1)
        if rule == "min_p":
            return -torch.log(self.pvalues(scores).amin(1))
        if rule == "fisher":
            return -2.0 * torch.log(self.pvalues(scores)).sum(1)
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
