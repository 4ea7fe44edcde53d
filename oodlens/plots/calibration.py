"""p-value calibration: is the false-alarm rate what was promised? For ID inputs a valid p-value satisfies
P(p ≤ t) ≤ t, so the empirical curve should sit on or below the diagonal."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import OODLensError
from ._figure import as_series, colour, new_figure, style


def pvalue_calibration(pvalues: Mapping[str, Any], max_level: float = 0.2, title: str = "", ax: Any = None):
    """Empirical false-alarm rate (share of ID p-values ≤ t, %) against the nominal level t (%), for t in
    [0, ``max_level``], one step curve per entry of ``pvalues`` (e.g. per detector, or per method: marginal,
    Simes, DKW), with the diagonal ``rate = t``. Returns the Figure."""
    series = as_series(pvalues, "pvalues")
    if not 0.0 < max_level <= 1.0:
        raise OODLensError(f"max_level must be in (0, 1], got {max_level}")
    for k, p in series.items():
        if p.min() < 0 or p.max() > 1:
            raise OODLensError(f"pvalues[{k!r}] must lie in [0, 1]")
    if ax is None:
        fig, (ax,) = new_figure(4.4, 3.8)
    fig = ax.figure
    t = np.linspace(0.0, max_level, 400)
    ax.plot(100 * t, 100 * t, color="#808080", linestyle="--", linewidth=1, label="nominal (rate = level)")
    for i, (name, p) in enumerate(series.items()):
        ps = np.sort(p)
        rate = np.searchsorted(ps, t + 1e-12, side="right") / ps.size
        ax.plot(100 * t, 100 * rate, color=colour(i), linewidth=1.5, drawstyle="steps-post", label=name)
    ax.set_xlim(0, 100 * max_level)
    ax.set_ylim(0, 100 * max_level * 1.25)
    style(ax, "nominal level t (%)", "ID flagged: p ≤ t (%)", title)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return fig


__all__ = ["pvalue_calibration"]
