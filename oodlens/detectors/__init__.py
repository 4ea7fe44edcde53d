"""OOD detectors: one file per method, each registered under its ``name``.

>>> from oodlens.detectors import create, available_detectors
>>> det = create("energy", temperature=1.0).fit(train_features)
>>> scores = det.score(test_features)        # higher = more OOD
"""

from .base import Detector, Head
from .registry import available_detectors, create, detectors_for, get_detector, register  # registers the built-ins

__all__ = ["Detector", "Head", "available_detectors", "create", "detectors_for", "get_detector", "register"]
