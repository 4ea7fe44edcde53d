"""Temporal aggregation against naive per-track loops, the Hungarian IoU tracker, time to detection."""

import numpy as np
import pytest
import torch

from oodlens.detection import Detections
from oodlens.detection.temporal import aggregate, false_alarm_threshold, time_to_detection, track_max
from oodlens.detection.tracking import track_boxes
from oodlens.errors import OODLensError


def _naive(x, track, frame, method, alpha=0.3, window=5, drift=0.5, mu=0.0, sigma=1.0):
    out = np.empty_like(x)
    for t in np.unique(track):
        idx = np.flatnonzero(track == t)
        idx = idx[np.argsort(frame[idx])]
        a = 0.0
        for j, i in enumerate(idx):
            v = x[i]
            if method == "ema":
                a = v if j == 0 else alpha * v + (1 - alpha) * a
            elif method == "max":
                a = v if j == 0 else max(a, v)
            elif method == "window":
                a = np.mean(x[idx[max(0, j - window + 1):j + 1]])
            elif method == "cusum":
                a = max(0.0, a + (v - mu) / sigma - drift)
            out[i] = a
    return out


@pytest.mark.parametrize("method", ["ema", "max", "window", "cusum"])
def test_aggregate_matches_naive(method):
    rng = np.random.default_rng(3)
    n = 300
    track = rng.integers(0, 25, n)
    frame = np.zeros(n, int)
    for t in np.unique(track):  # distinct frames per track, shuffled rows
        idx = np.flatnonzero(track == t)
        frame[idx] = rng.permutation(idx.size) * 2
    x = rng.normal(size=n)
    kw = dict(mu=0.3, sigma=1.7) if method == "cusum" else {}
    np.testing.assert_allclose(aggregate(x, track, frame, method, **kw), _naive(x, track, frame, method, **kw), atol=1e-12)


def test_aggregate_bad_input():
    with pytest.raises(OODLensError, match="unknown aggregation"):
        aggregate([1.0], [0], [0], "median")
    with pytest.raises(OODLensError, match="same length"):
        aggregate([1.0, 2.0], [0], [0])


def test_tracker_follows_moving_boxes_and_splits_videos():
    # two objects moving right by 2 px per frame, in two videos; a third box appears at frame 2
    boxes, frames, videos = [], [], []
    for v in range(2):
        for f in range(4):
            boxes += [[2 * f, 0, 2 * f + 10, 10], [2 * f, 30, 2 * f + 10, 40]]
            frames += [f, f]
            videos += [v, v]
            if f >= 2:
                boxes.append([50, 50, 60, 60]), frames.append(f), videos.append(v)
    ids = track_boxes(np.array(boxes, float), np.array(frames), np.array(videos))
    b, f, v = np.array(boxes), np.array(frames), np.array(videos)
    for vid in range(2):
        for y in (0, 30, 50):
            sel = (v == vid) & (b[:, 1] == y)
            assert np.unique(ids[sel]).size == 1
    assert np.unique(ids).size == 6  # 3 tracks per video, none shared across videos


def test_track_id_jump_is_an_error():
    with pytest.raises(OODLensError, match="jumps between images"):
        Detections(torch.tensor([0, 1, 1]), torch.tensor([[0, 0, 1, 1.]] * 3), torch.zeros(3, 2), torch.ones(3), 2, 2,
                   frame=torch.tensor([0, 1, 1]), track=torch.tensor([5, 5, 5]))


def test_time_to_detection_hand_made():
    # ID tracks' maxima: 1, 2, 3, 4 -> at 25 % false alarm, tau = 3 (one track of four above it would be 4 > 3)
    tau = false_alarm_threshold([1.0, 2.0, 3.0, 4.0], 0.25)
    assert tau == 3.0
    agg = np.array([1.0, 2.0, 3.5, 5.0, 0.5])
    frame = np.array([3, 4, 5, 6, 2])
    obj = np.array([0, 0, 0, 0, 1])
    ttd = time_to_detection(agg, frame, obj, np.array([2, 2]), tau)
    assert ttd.tolist() == [3, -1]  # object 0 appears at 2, first aggregate > 3 at frame 5; object 1 never
    ids, m = track_max(np.array([1.0, 3.0, 2.0]), np.array([4, 4, 7]))
    assert ids.tolist() == [4, 7] and m.tolist() == [3.0, 2.0]
