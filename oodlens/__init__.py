"""oodlens: out-of-distribution detection for trained PyTorch models.

Score inputs with published OOD methods, turn scores into calibrated OOD degrees, and benchmark methods on a
fair protocol. Higher score = more OOD, everywhere.
"""

from .errors import MissingFeatureError, NotFittedError, OODLensError
from .extract import extract
from .features import Features
from . import fusion as _fusion  # noqa: F401,E402  registers "fused", so every listed name is creatable

__version__ = "0.1.0"

__all__ = ["Features", "MissingFeatureError", "NotFittedError", "OODLensError", "extract", "__version__"]
