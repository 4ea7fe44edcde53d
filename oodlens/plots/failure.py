"""Risk–coverage curves: accept inputs from the least to the most OOD-looking and watch the error rate."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import OODLensError
from ..metrics import aurc, rc_curve
from ._figure import as_array, as_series, colour, new_figure, style


def risk_coverage(scores: Mapping[str, Any], correct: Any, kind: str = "score", title: str = "", ax: Any = None):
    """Selective risk (error rate among accepted inputs, %) against coverage (share accepted, %), one curve per
    entry of ``scores`` (``kind="score"``: higher = more OOD = rejected first; ``"confidence"``: the opposite),
    with the oracle (every error rejected first) and a random ranking (flat at the overall error rate). The
    legend gives each curve's AURC (×100, lower is better). Returns the Figure."""
    series = as_series(scores, "scores")
    raw = np.asarray(correct.detach().cpu() if hasattr(correct, "detach") else correct).reshape(-1)
    if raw.dtype != bool and not (raw.dtype.kind in "iuf" and np.isin(raw, (0, 1)).all()):
        raise OODLensError("correct must be one flag per input: booleans or 0/1 (was the model right?)")
    ok = raw.astype(bool)
    for k, s in series.items():
        if s.shape != ok.shape:
            raise OODLensError(f"scores[{k!r}] has {s.size} entries for {ok.size} correctness flags")
    if ax is None:
        fig, (ax,) = new_figure(4.8, 3.6)
    fig = ax.figure
    err = 1.0 - ok.mean()
    cov = np.linspace(1e-3, 1, 200)
    oracle = np.clip((cov - (1 - err)) / cov, 0, None)
    ax.plot(100 * cov, 100 * oracle, color="#b0b0b0", linestyle="--", linewidth=1, label="oracle")
    ax.axhline(100 * err, color="#b0b0b0", linestyle=":", linewidth=1, label=f"random ({100 * err:.1f} % errors)")
    for i, (name, s) in enumerate(series.items()):
        rc = rc_curve(s, ok, kind=kind)
        keep = rc["coverage"] > 0
        area = aurc(s, ok, kind=kind)
        ax.plot(100 * rc["coverage"][keep], 100 * rc["selective_risk"][keep], color=colour(i), linewidth=1.5,
                label=f"{name} (AURC {100 * area:.1f})")
    ax.set_xlim(0, 100)
    ax.set_ylim(bottom=0)
    style(ax, "coverage: inputs accepted (%)", "selective risk: errors among accepted (%)", title)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return fig


__all__ = ["risk_coverage"]
