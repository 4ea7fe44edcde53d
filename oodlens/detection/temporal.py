"""OOD scores over time: per-track causal aggregation of box scores, and time to detection.

For a track with box scores x_1, x_2, … (in frame order), the aggregate at step t uses x_1..x_t only:

* ``ema``:       a_t = α·x_t + (1 − α)·a_{t−1}, a_1 = x_1 (exponential moving average, α = ``alpha``);
* ``max``:       a_t = max(x_1..x_t) (running max);
* ``window``:    a_t = mean(x_{max(1, t−w+1)}..x_t) (windowed mean, w = ``window``);
* ``cusum``:     a_t = max(0, a_{t−1} + z_t − k), a_0 = 0, z_t = (x_t − μ)/σ standardised with the ID
  calibration scores' mean and standard deviation (Page's CUSUM; k = ``drift``, 0.5 by default).

Everything is vectorised over tracks: boxes are sorted by (track, frame) once; running max and windowed mean
are single array operations; EMA and CUSUM loop over the position in the track (≤ the longest track), each step
updating every track at once.

**Time to detection**: a threshold τ is set so that a fraction ``false_alarm`` of ID tracks is ever flagged
(τ = the smallest ID-track maximum with at most a fraction ``false_alarm`` of ID-track maxima strictly above it);
for each unknown ground-truth object, the delay is the first frame at which a detection matched to it has
aggregate > τ, minus the frame of its first appearance (objects never flagged are reported as missed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import OODLensError
from .matching import _np

METHODS = ("none", "ema", "max", "window", "cusum")


def _order(track: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order by (track, frame), each box's position in its track, and each box's segment start."""
    order = np.lexsort((frame, track))
    t = track[order]
    starts = np.r_[0, np.flatnonzero(t[1:] != t[:-1]) + 1]
    seg = np.repeat(starts, np.diff(np.r_[starts, t.size]))
    return order, np.arange(t.size) - seg, seg


def aggregate(scores: Any, track: Any, frame: Any, method: str = "ema", alpha: float = 0.3, window: int = 5,
              drift: float = 0.5, mu: float = 0.0, sigma: float = 1.0) -> np.ndarray:
    """Causal per-track aggregate of box ``scores`` (N,), aligned with the input rows. Boxes with track −1 keep
    their own score (standardised for ``cusum``)."""
    x = _np(scores).astype(np.float64).ravel()
    tr, fr = _np(track).astype(np.int64).ravel(), _np(frame).astype(np.int64).ravel()
    if not (x.shape == tr.shape == fr.shape):
        raise OODLensError(f"scores, track and frame must have the same length, got {x.shape}, {tr.shape}, {fr.shape}")
    if method not in METHODS:
        raise OODLensError(f"unknown aggregation {method!r}; choose one of {METHODS}")
    if not np.isfinite(x).all():
        raise OODLensError("scores have non-finite values")
    if method == "none" or x.size == 0:
        return x.copy()
    if method == "cusum":
        if not (sigma > 0 and np.isfinite(sigma) and np.isfinite(mu)):
            raise OODLensError(f"cusum needs a finite mu and a finite sigma > 0, got mu={mu}, sigma={sigma}")
        x = (x - mu) / sigma
    untracked = tr < 0
    tr = np.where(untracked, -1 - np.arange(x.size), tr)  # each untracked box is its own track
    order, pos, seg = _order(tr, fr)
    to, fo = tr[order], fr[order]
    dup = (to[1:] == to[:-1]) & (fo[1:] == fo[:-1])
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise OODLensError(f"track {int(to[i])} has two boxes in frame {int(fo[i])}: per-track aggregation needs "
                           f"one box per (track, frame)")
    xs = x[order]
    if method == "max":
        t = tr[order]
        # exact segmented running max: numpy orders complex numbers lexicographically, tracks ascend along xs
        rank = np.cumsum(np.r_[0, t[1:] != t[:-1]])
        a = np.maximum.accumulate(rank + 1j * xs).imag
    elif method == "window":
        if window < 1:
            raise OODLensError(f"window must be ≥ 1, got {window}")
        c = np.r_[0.0, np.cumsum(xs)]
        i = np.arange(xs.size)
        lo = np.maximum(seg, i - window + 1)
        a = (c[i + 1] - c[lo]) / (i + 1 - lo)
    else:
        if method == "ema" and not 0 < alpha <= 1:
            raise OODLensError(f"ema needs 0 < alpha <= 1, got {alpha}")
        a = np.empty_like(xs)
        by_pos = np.argsort(pos, kind="stable")
        bounds = np.searchsorted(pos[by_pos], np.arange(int(pos.max()) + 2))
        for p in range(bounds.size - 1):
            at = by_pos[bounds[p]:bounds[p + 1]]  # the p-th box of every track long enough; at - 1 is its predecessor
            prev = a[at - 1] if p else None
            if method == "ema":
                a[at] = xs[at] if p == 0 else alpha * xs[at] + (1 - alpha) * prev
            else:
                a[at] = np.maximum(0.0, (0.0 if p == 0 else prev) + xs[at] - drift)
    out = np.empty_like(a)
    out[order] = a
    return out


def track_max(values: Any, track: Any) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, max value per track) for boxes with track ≥ 0."""
    v, t = _np(values).astype(np.float64), _np(track).astype(np.int64)
    keep = t >= 0
    ids, inv = np.unique(t[keep], return_inverse=True)
    m = np.full(ids.size, -np.inf)
    np.maximum.at(m, inv, v[keep])
    return ids, m


def false_alarm_threshold(id_track_max: Any, false_alarm: float = 0.05) -> float:
    """τ such that at most ``false_alarm`` of the ID tracks have max aggregate > τ."""
    m = _np(id_track_max).astype(np.float64)
    if not np.isfinite(m).all():
        raise OODLensError("ID track maxima have NaN or infinite values")
    if m.size == 0:
        raise OODLensError("no ID tracks to set a false-alarm threshold on")
    if not 0 <= false_alarm < 1:
        raise OODLensError(f"false_alarm must be in [0, 1), got {false_alarm}")
    s = np.sort(m)
    above = s.size - np.searchsorted(s, s, "right")  # ID tracks strictly above each candidate
    return float(s[int(np.argmax(above <= false_alarm * s.size))])


def time_to_detection(agg: Any, det_frame: Any, det_object: Any, obj_first_frame: Any, threshold: float,
                      ) -> np.ndarray:
    """Frames from each object's first appearance to its first flagged detection (aggregate > threshold), or −1
    when never flagged. ``det_object``: the ground-truth object (track) index matched to each detection, or −1;
    ``obj_first_frame`` (M,): first frame of each object."""
    a, f, o = _np(agg).astype(np.float64), _np(det_frame).astype(np.int64), _np(det_object).astype(np.int64)
    first = _np(obj_first_frame).astype(np.int64)
    if not (a.shape == f.shape == o.shape) or a.ndim != 1 or first.ndim != 1:
        raise OODLensError(f"agg, det_frame and det_object must be 1-D of one length, got {a.shape}, {f.shape}, "
                           f"{o.shape}; obj_first_frame 1-D, got {first.shape}")
    if o.size and int(o.max()) >= first.size:
        raise OODLensError(f"det_object has object index {int(o.max())} but obj_first_frame covers {first.size} "
                           f"objects")
    hit = (a > threshold) & (o >= 0)
    big = np.iinfo(np.int64).max
    when = np.full(first.size, big)
    np.minimum.at(when, o[hit], f[hit])
    return np.where(when == big, -1, when - first)
