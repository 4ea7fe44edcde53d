"""Shared plumbing for the plots: a Figure on the Agg canvas (no pyplot state, no display), one palette, and
array coercion. matplotlib is imported lazily so the rest of oodlens never needs it."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import OODLensError

#: colour-blind-safe palette (Okabe–Ito), then matplotlib's tab10 for more series
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
ID_COLOUR = "#7f7f7f"


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def new_figure(width: float = 5.0, height: float = 3.6, nrows: int = 1, ncols: int = 1, **kwargs: Any):
    """(Figure, axes array) on the Agg canvas. ``axes`` is always a flat numpy array of Axes."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a declared dependency
        raise OODLensError("plots need matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes.ravel()


def style(ax: Any, xlabel: str = "", ylabel: str = "", title: str = "") -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10.5)
    ax.grid(True, color="#e5e5e5", linewidth=0.7)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def as_array(x: Any, name: str, ndim: int | None = 1) -> np.ndarray:
    """A float numpy array from a tensor / array / list; checks the number of dimensions and finiteness."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise OODLensError(f"{name} must be numbers, got {type(x).__name__} ({e})") from None
    if ndim is not None and a.ndim != ndim:
        raise OODLensError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise OODLensError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise OODLensError(f"{name} holds NaN or infinite values")
    return a


def as_series(series: Mapping[str, Any], name: str) -> dict[str, np.ndarray]:
    """A non-empty {label: 1-D array} mapping."""
    if not isinstance(series, Mapping) or not series:
        raise OODLensError(f"{name} must be a non-empty mapping {{label: scores}}")
    return {str(k): as_array(v, f"{name}[{k!r}]") for k, v in series.items()}


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


def hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes[used:]:
        ax.set_visible(False)
