"""Fusion of several OOD scores (detectors or modalities) into one: p-value combinations (Fisher, Bonferroni /
min-p, Simes, harmonic mean, mean), z-score averaging, and a logistic combination learned on validation data only.

* :class:`ScoreFusion` — a rule on precomputed score arrays;
* :class:`Fused` — a registered detector (``create("fused", members=[...], method="fisher")``) that fits its
  member detectors and calibrates the rule in ``fit_validation``.

Importing this package registers ``fused`` (``oodlens.detectors`` does not import it: fusion sits above it).
"""

from .fused import DEFAULT_MEMBERS, Fused
from .rules import P_RULES, RULES, ScoreFusion, apply_rule, combine_pvalues, fit_rule, log_combined_pvalue, stack_scores

__all__ = ["DEFAULT_MEMBERS", "Fused", "P_RULES", "RULES", "ScoreFusion", "apply_rule", "combine_pvalues", "fit_rule",
           "log_combined_pvalue", "stack_scores"]
