"""AUROC against covariate-shift severity: does a detector notice a shift more as it grows?"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import OODLensError
from ._figure import colour, grid_shape, hide_unused, new_figure, style


def auroc_vs_severity(data: Mapping[str, Mapping[str, Mapping[Any, float]]], title: str = "", max_cols: int = 3,
                      ylabel: str = "AUROC vs ID test (%)", chance: float | None = 50.0):
    """One panel per shift (``data[shift][detector][severity] = value``, values in %), one line per detector.
    A dotted line marks chance (``chance``; ``None`` for none). Returns the Figure."""
    if not isinstance(data, Mapping) or not data:
        raise OODLensError("auroc_vs_severity needs a non-empty mapping {shift: {detector: {severity: value}}}")
    for shift, per in data.items():
        if not isinstance(per, Mapping) or not any(per.values()):
            raise OODLensError(f"auroc_vs_severity: data[{shift!r}] has no {{detector: {{severity: value}}}} points")
        for d, points in per.items():
            if not isinstance(points, Mapping):
                raise OODLensError(f"auroc_vs_severity: data[{shift!r}][{d!r}] must map severity -> value")
            vals = np.asarray(list(points.values()), dtype=float)
            if not np.isfinite(vals).all():
                raise OODLensError(f"auroc_vs_severity: data[{shift!r}][{d!r}] holds NaN or infinite values")
    rows, cols = grid_shape(len(data), max_cols)
    fig, axes = new_figure(3.6 * cols, 2.9 * rows + 0.5, rows, cols, sharey=True)
    detectors = list(dict.fromkeys(d for per in data.values() for d in per))
    for ax, (shift, per) in zip(axes, data.items()):
        for d, points in per.items():
            if not points:
                continue
            sev = np.array(sorted(points), dtype=float)
            vals = np.array([points[k] for k in sorted(points)], dtype=float)
            ax.plot(sev, vals, marker="o", markersize=3.5, linewidth=1.5, color=colour(detectors.index(d)), label=d)
        if chance is not None:
            ax.axhline(chance, color="#b0b0b0", linestyle=":", linewidth=1)
        style(ax, "severity", ylabel if ax is axes[0] or list(axes).index(ax) % cols == 0 else "", shift)
        ax.xaxis.get_major_locator().set_params(integer=True)
    hide_unused(axes, len(data))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11.5)
    return fig


__all__ = ["auroc_vs_severity"]
