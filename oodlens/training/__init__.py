"""Training-time OOD methods and the seeded training loop they share (see docs/training.md).

>>> from oodlens.training import train_classifier, ClassifierConfig, OutlierExposure
>>> train_classifier(model, x, y, x_val, y_val, OutlierExposure(), ClassifierConfig(epochs=20), outliers=x_aux)
"""

from .abet import AbeT, AbeTHead, abet_loss, abet_score
from .base import CrossEntropy, StepContext
from .checkpoint import load_checkpoint, save_checkpoint
from .classifier import ClassifierConfig, ClassifierResult, FeatureTap, train_classifier
from .energy_finetune import EnergyFinetune, energy_margin_loss
from .logitnorm import LogitNorm, logitnorm_loss
from .loop import LoopResult, fit_epochs
from .moe import MixtureOutlierExposure, soft_cross_entropy
from .npos import NPOS, synthesize_outliers
from .outlier_exposure import OutlierExposure, uniform_cross_entropy
from .vos import VOS, class_gaussians, sample_virtual_outliers

#: every method by name (constructed with the reference defaults)
METHODS = {m.name: m for m in (CrossEntropy, LogitNorm, OutlierExposure, EnergyFinetune, MixtureOutlierExposure,
                                VOS, NPOS, AbeT)}

__all__ = [
    "METHODS", "AbeT", "AbeTHead", "ClassifierConfig", "ClassifierResult", "CrossEntropy", "EnergyFinetune",
    "FeatureTap", "LogitNorm", "LoopResult", "MixtureOutlierExposure", "NPOS", "OutlierExposure", "StepContext", "VOS",
    "abet_loss", "abet_score", "class_gaussians", "energy_margin_loss", "fit_epochs", "load_checkpoint",
    "logitnorm_loss", "sample_virtual_outliers", "save_checkpoint", "soft_cross_entropy", "synthesize_outliers",
    "train_classifier", "uniform_cross_entropy",
]
