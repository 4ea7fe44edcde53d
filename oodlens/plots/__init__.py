"""Plots of OOD results. Every function takes arrays (numpy or torch; higher score = more OOD) and returns a
matplotlib ``Figure`` drawn on the Agg canvas (headless: no pyplot state, no display), ready for
:class:`oodlens.bench.html.HtmlReport.figure` or ``fig.savefig(path)``.

* :func:`roc_curves`, :func:`score_histograms` — ID against each OOD set;
* :func:`auroc_vs_severity` — covariate shift: AUROC per severity level, per shift and detector;
* :func:`risk_coverage` — selective risk against coverage (failure prediction);
* :func:`pvalue_calibration` — empirical against nominal false-alarm rate of conformal p-values;
* :func:`modality_attribution` — share of inputs blamed on each modality;
* :func:`boxes_with_scores`, :func:`score_map` — detection boxes and segmentation score maps over the image.

Rates and AUROCs are shown in % (×100), as in the tables. For a figure of your own in the same style:
``fig, axes = new_figure(width, height, nrows, ncols)`` (Agg canvas, constrained layout), ``colour(i)`` (the
colour-blind-safe palette) and ``style(ax, xlabel, ylabel, title)``.
"""

from ._figure import PALETTE, colour, new_figure, style
from .calibration import pvalue_calibration
from .failure import risk_coverage
from .modality import modality_attribution
from .scores import roc_curves, score_histograms
from .shift import auroc_vs_severity
from .spatial import boxes_with_scores, score_map

__all__ = ["PALETTE", "auroc_vs_severity", "boxes_with_scores", "colour", "modality_attribution", "new_figure",
           "pvalue_calibration", "risk_coverage", "roc_curves", "score_histograms", "score_map", "style"]
