"""Base for detectors that read only the logits and learn nothing at fit (MSP, MaxLogit, Entropy)."""

from __future__ import annotations

from .base import Detector


class LogitOnlyDetector(Detector):
    """Hyper-parameter: the name of the logits feature. ``_fit`` stores nothing; subclasses define ``_score``."""

    def __init__(self, logits: str = "logits"):
        self.logits = logits

    def required_features(self) -> tuple[str, ...]:
        return (self.logits,)

    def _fit(self, train, labels, head, model) -> None:
        pass
