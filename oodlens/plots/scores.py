"""ROC curves and score histograms: ID against one or more OOD sets (higher score = more OOD)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import OODLensError
from ..metrics import curves
from ._figure import ID_COLOUR, as_array, as_series, colour, grid_shape, hide_unused, new_figure, style


def roc_curves(id_scores: Any, ood_scores: Mapping[str, Any], title: str = "", ax: Any = None):
    """ROC curves with OOD as the positive class: true-positive rate (OOD flagged) against false-positive rate (ID
    flagged), one curve per entry of ``ood_scores``, each labelled with its AUROC (×100).

    ``id_scores`` is one array, or a mapping with the same keys as ``ood_scores`` (e.g. one ID array per
    detector when the curves compare detectors on one test set). Returns the Figure."""
    ood = as_series(ood_scores, "ood_scores")
    ids = ({k: as_array(id_scores[k], f"id_scores[{k!r}]") for k in ood} if isinstance(id_scores, Mapping)
           else dict.fromkeys(ood, as_array(id_scores, "id_scores")))
    own = ax is None
    if own:
        fig, (ax,) = new_figure(4.0, 3.6 + 0.22 * len(ood))
    fig = ax.figure
    ax.plot([0, 100], [0, 100], color="#b0b0b0", linestyle=":", linewidth=1, label="chance")
    for i, (name, s) in enumerate(ood.items()):
        c = curves(ids[name], s)[0]
        ax.plot(100 * c.fpr, 100 * c.tpr, color=colour(i), linewidth=1.6,
                label=f"{name} (AUROC {100 * c.auroc():.1f})", drawstyle="steps-post")
    ax.axhline(95, color="#d0d0d0", linewidth=0.8, linestyle="--")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 101)
    style(ax, "ID flagged as OOD (FPR, %)", "OOD flagged (TPR, %)", title)
    if own:  # below the axes: the curves stay visible, whatever their shape
        ax.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(0.0, -0.16), frameon=False, ncols=1)
    else:
        ax.legend(fontsize=8, loc="lower right", frameon=False)
    return fig


def score_histograms(id_scores: Any, ood_scores: Mapping[str, Any], title: str = "", bins: int = 40,
                     max_cols: int = 3):
    """One panel per OOD set: the ID score distribution (grey) against that set's (colour), as densities on
    shared bins. The x range covers the 0.5–99.5 % quantiles of all scores so that a few extreme values do not
    squash the rest; positive scores spanning more than a factor 30 (distances) get log-spaced bins on a log
    axis. Returns the Figure."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise OODLensError(f"bins must be a positive integer, got {bins!r}")
    ids = as_array(id_scores, "id_scores")
    ood = as_series(ood_scores, "ood_scores")
    allv = np.concatenate([ids, *ood.values()])
    lo, hi = np.quantile(allv, [0.005, 0.995])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    log = lo > 0 and hi / lo > 30  # positive scores over orders of magnitude (distances): log-spaced bins
    edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
    rows, cols = grid_shape(len(ood), max_cols)
    fig, axes = new_figure(3.4 * cols, 2.5 * rows + (0.35 if title else 0), rows, cols)
    for i, (name, s) in enumerate(ood.items()):
        ax = axes[i]
        ax.hist(np.clip(ids, lo, hi), bins=edges, density=True, color=ID_COLOUR, alpha=0.45, label="ID test")
        ax.hist(np.clip(s, lo, hi), bins=edges, density=True, histtype="stepfilled", alpha=0.45,
                color=colour(i), label=name)
        ax.hist(np.clip(s, lo, hi), bins=edges, density=True, histtype="step", color=colour(i), linewidth=1.2)
        if log:
            ax.set_xscale("log")
        style(ax, "score (higher = more OOD)" + (", log scale" if log else ""), "density" if i % cols == 0 else "", name)
        ax.legend(fontsize=7.5, frameon=False)
        ax.set_yticks([])
    hide_unused(axes, len(ood))
    if title:
        fig.suptitle(title, fontsize=11.5)
    return fig


__all__ = ["roc_curves", "score_histograms"]
