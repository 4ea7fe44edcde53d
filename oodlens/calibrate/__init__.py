"""Calibrated OOD degree: conformal p-values (marginal and calibration-conditional), the OOD degree ``1 − p``
with a plain-language reading, score thresholds with a guaranteed ID acceptance rate, FDR-controlled batch
screening, and a check that calibration data is held out from fitting.

>>> from oodlens.calibrate import ConformalCalibrator, benjamini_hochberg
>>> cal = ConformalCalibrator(det.score(id_calibration))      # ID data held out from fit
>>> p = cal.pvalues(det.score(batch))                          # P(p ≤ t) ≤ t for ID inputs
>>> cal.describe(det.score(batch))[0]                          # 'OOD degree 0.992: more atypical than 99.2 % ...'
>>> tau = cal.threshold(acceptance=0.95)                       # accept score ≤ tau.value: ≥ 95 % of ID kept
>>> benjamini_hochberg(p, alpha=0.1).rejected                  # flag with FDR ≤ 10 %

Across sites and scanners: :class:`GroupCalibrator` (Mondrian: p-values within the input's group, small and
unseen groups explicit) and :class:`WeightedCalibrator` (weighted conformal p-values for a new site, weights from a
cross-fitted domain classifier on unlabelled inputs of that site).
"""

from .explain import FeatureBank, drivers, explain_table
from .groups import POOLED, GroupCalibrator, GroupPValues, conditional_far_bound
from .overlap import check_disjoint, overlapping_rows, row_hashes, rows_in_hashes
from .pvalues import (
    PVALUE_METHODS,
    ConformalCalibrator,
    adjust_pvalues,
    conformal_pvalues,
    count_at_least,
    describe_degree,
    ood_degree,
    pvalue_table,
)
from .screening import SCREENING_METHODS, Screening, benjamini_hochberg, false_discovery_proportion, screen, storey_bh
from .thresholds import GUARANTEES, Threshold, acceptance_rate, conformal_threshold
from .weighted import DomainWeights, WeightedCalibrator, effective_sample_size, weighted_pvalues

__all__ = [
    "GUARANTEES", "PVALUE_METHODS", "SCREENING_METHODS", "ConformalCalibrator", "Screening", "Threshold",
    "acceptance_rate", "adjust_pvalues", "benjamini_hochberg", "check_disjoint", "conformal_pvalues",
    "conformal_threshold", "count_at_least", "describe_degree", "false_discovery_proportion", "ood_degree",
    "overlapping_rows", "pvalue_table", "row_hashes", "rows_in_hashes", "screen", "storey_bh",
    "POOLED", "GroupCalibrator", "GroupPValues", "conditional_far_bound",
    "DomainWeights", "WeightedCalibrator", "effective_sample_size", "weighted_pvalues",
    "FeatureBank", "drivers", "explain_table",
]
