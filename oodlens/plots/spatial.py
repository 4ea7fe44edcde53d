"""Figures for the spatial tasks: boxes with their OOD scores (detection) and per-pixel score maps
(segmentation), drawn over the input image."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import OODLensError
from ._figure import as_array, new_figure


def _image(image: Any) -> np.ndarray:
    """(H, W) or (H, W, 3) float image in [0, 1] from an array / tensor in HWC or CHW, 0–1 or 0–255."""
    img = as_array(image, "image", ndim=None)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise OODLensError(f"image must be (H, W), (H, W, 3) or (3, H, W), got shape {img.shape}")
    if img.max() > 1.0:
        img = img / 255.0 if img.max() <= 255 else (img - img.min()) / (img.max() - img.min())
    return np.clip(img, 0.0, 1.0)


def _colormap(name: str) -> Any:
    from matplotlib import colormaps

    try:
        return colormaps[name]
    except (KeyError, ValueError, TypeError):
        raise OODLensError(f"cmap {name!r} is not a matplotlib colormap (e.g. 'inferno', 'plasma', 'viridis')") from None


def boxes_with_scores(image: Any, boxes: Any, scores: Any, labels: Sequence[str] | None = None,
                      threshold: float | None = None, title: str = "", cmap: str = "plasma"):
    """The image with each box (``boxes`` (N, 4) as x1, y1, x2, y2 in pixels) outlined in a colour given by its
    OOD score, its label and score written above it, and a colour bar. With ``threshold``, boxes scoring above it
    are drawn solid and thick (flagged), the others dashed. Returns the Figure."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    img = _image(image)
    b = as_array(boxes, "boxes", ndim=None) if np.size(boxes) else np.zeros((0, 4))
    if b.shape[-1] != 4 or b.ndim > 2:
        raise OODLensError(f"boxes must be (N, 4) as x1, y1, x2, y2, got shape {b.shape}")
    b = b.reshape(-1, 4)
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise OODLensError("boxes must be x1, y1, x2, y2 with x2 ≥ x1 and y2 ≥ y1 (got a box with x2 < x1 or "
                           "y2 < y1: are they x, y, w, h?)")
    s = as_array(scores, "scores") if len(b) else np.zeros(0)
    if s.shape[0] != b.shape[0]:
        raise OODLensError(f"{b.shape[0]} boxes but {s.shape[0]} scores")
    if labels is not None and len(labels) != len(b):
        raise OODLensError(f"{len(b)} boxes but {len(labels)} labels")
    h, w = img.shape[:2]
    fig, (ax,) = new_figure(5.4, 5.4 * h / w + 0.4)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 1.0)
    norm = Normalize(lo, hi if hi > lo else lo + 1)
    cm = _colormap(cmap)
    for i in np.argsort(s):  # most OOD drawn last (on top)
        x1, y1, x2, y2 = b[i]
        flagged = threshold is not None and s[i] > threshold
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=cm(norm(s[i])),
                               linewidth=2.6 if flagged or threshold is None else 1.4,
                               linestyle="-" if flagged or threshold is None else "--"))
        text = (f"{labels[i]} " if labels is not None else "") + f"{s[i]:.2f}"
        r, g, b_, _ = cm(norm(s[i]))
        ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b_ > 0.55 else "white"  # readable on the box colour
        ax.text(x1, y1 - 2, text, fontsize=7.5, color=ink, va="bottom",
                bbox=dict(facecolor=cm(norm(s[i])), edgecolor="none", pad=1.2, alpha=0.9))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10.5)
    from matplotlib.cm import ScalarMappable

    bar = fig.colorbar(ScalarMappable(norm, cm), ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("OOD score" + (f" (flagged > {threshold:.3g})" if threshold is not None else ""))
    if threshold is not None and lo <= threshold <= hi:
        bar.ax.axhline(threshold, color="black", linewidth=1.2)
    return fig


def score_map(image: Any, scores: Any, mask: Any = None, title: str = "", cmap: str = "inferno",
              alpha: float = 0.6, threshold: float | None = None):
    """Two panels: the image (with the outline of ``mask``, the true OOD pixels, if given) and the per-pixel OOD
    score map (H, W) over a faded copy of it, with a colour bar (and the ``threshold`` contour if given).
    Returns the Figure."""
    img = _image(image)
    _colormap(cmap)
    sm = as_array(scores, "scores", ndim=2)
    if sm.shape != img.shape[:2]:
        raise OODLensError(f"score map {sm.shape} does not match the image {img.shape[:2]}")
    m = None
    if mask is not None:
        m = as_array(mask, "mask", ndim=2)
        if m.shape != sm.shape:
            raise OODLensError(f"mask {m.shape} does not match the score map {sm.shape}")
    h, w = sm.shape
    fig, axes = new_figure(9.0, 4.5 * h / w + 0.5, 1, 2)
    grey = img if img.ndim == 2 else img.mean(-1)
    axes[0].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    axes[0].set_title("input" + (" (outline: true OOD pixels)" if m is not None else ""), fontsize=10)
    axes[1].imshow(grey, cmap="gray", vmin=0, vmax=1, alpha=0.6)
    im = axes[1].imshow(sm, cmap=cmap, alpha=alpha)
    axes[1].set_title("OOD score per pixel" + (f" (contour: > {threshold:.3g})" if threshold is not None else ""),
                      fontsize=10)
    for ax in axes:
        if m is not None and 0 < m.sum() < m.size:
            ax.contour(m, levels=[0.5], colors="#00e5ff", linewidths=1.2)
        ax.set_axis_off()
    if threshold is not None and sm.min() < threshold < sm.max():
        axes[1].contour(sm, levels=[threshold], colors="white", linewidths=0.9, linestyles="--")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.02).set_label("OOD score")
    if title:
        fig.suptitle(title, fontsize=11.5)
    return fig


__all__ = ["boxes_with_scores", "score_map"]
