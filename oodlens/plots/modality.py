"""Per-modality attribution: which sensor do the OOD rows blame?"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import OODLensError
from ._figure import colour, new_figure, style


def modality_attribution(shares: Any, title: str = "", expected: Mapping[str, str] | None = None):
    """Horizontal stacked bars: for each row (a test set, or training × detector × failed sensor) the share of
    inputs attributed to each modality (``shares[row][modality]`` in [0, 1], or a DataFrame rows × modalities).
    ``expected[row]`` names the modality that should be blamed (e.g. the failed sensor); its bar segment is
    hatched and its share printed. Returns the Figure."""
    if hasattr(shares, "to_dict") and hasattr(shares, "index"):
        shares = {str(i): {str(c): float(v) for c, v in row.items()} for i, row in shares.iterrows()}
    if not isinstance(shares, Mapping) or not shares:
        raise OODLensError("modality_attribution needs a non-empty mapping {row: {modality: share}}")
    bad = next((r for r, v in shares.items() if not isinstance(v, Mapping)), None)
    if bad is not None:
        raise OODLensError(f"modality_attribution: shares[{bad!r}] must be a mapping {{modality: share}}, got "
                           f"{type(shares[bad]).__name__} (for one row, wrap it: {{'row': {{...}}}})")
    rows = list(shares)
    modalities = list(dict.fromkeys(m for r in rows for m in shares[r]))
    values = np.array([[float(shares[r].get(m, 0.0)) for m in modalities] for r in rows])
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1 + 1e-9:
        raise OODLensError("attribution shares must be finite and within [0, 1]")
    expected = dict(expected or {})
    fig, (ax,) = new_figure(6.4, 0.8 + 0.34 * len(rows))
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for j, m in enumerate(modalities):
        hatch = ["//" if expected.get(r) == m else "" for r in rows]
        bars = ax.barh(y, 100 * values[:, j], left=100 * left, color=colour(j), alpha=0.85, label=m, height=0.7,
                       edgecolor="white", linewidth=0.6)
        for bar, h in zip(bars, hatch):
            bar.set_hatch(h)
        left += values[:, j]
    for yi, r in zip(y, rows):
        m = expected.get(r)
        if m in modalities:
            ax.text(101, yi, f"{100 * values[rows.index(r), modalities.index(m)]:.0f} % → {m}", va="center", fontsize=7.5)
    ax.set_yticks(y, rows, fontsize=8)
    ax.set_xlim(0, 118 if expected else 100)
    ax.set_xticks([0, 25, 50, 75, 100])
    style(ax, "share of inputs attributed to each modality (%)", "", title)
    ax.grid(False, axis="y")
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colour(j), alpha=0.85, label=m) for j, m in enumerate(modalities)]
    if expected:
        handles.append(Patch(facecolor="white", edgecolor="#555555", hatch="//", label="expected"))
    # below the axes, outside them: above, it collided with the title
    fig.legend(handles=handles, fontsize=8, frameon=False, ncols=len(handles), loc="outside lower center")
    return fig


__all__ = ["modality_attribution"]
