"""Metrics: pure functions on score arrays (higher score = more OOD)."""

from .ood import (
    METRIC_NAMES,
    accuracy,
    aupr_in,
    aupr_out,
    auroc,
    curves,
    detection_accuracy,
    fpr_at_tpr,
    id_rejected_at_ood_caught,
    ood_accepted_at_id_kept,
    ood_metrics,
)
from .failure import augrc, aurc, e_aurc, failure_metrics, misclassification_auroc, rc_curve
from .severity import auroc_by_severity, severity_spearman

__all__ = [
    "METRIC_NAMES", "accuracy", "aupr_in", "aupr_out", "auroc", "curves", "detection_accuracy", "fpr_at_tpr",
    "id_rejected_at_ood_caught", "ood_accepted_at_id_kept", "ood_metrics",
    "augrc", "aurc", "e_aurc", "failure_metrics", "misclassification_auroc", "rc_curve",
    "auroc_by_severity", "severity_spearman",
]
