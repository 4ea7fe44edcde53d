"""COCO AP@[.5:.95] and AP50 against pycocotools on random scenes; greedy matching on a hand-made case."""

import contextlib
import io

import numpy as np
import pytest
import torch

from oodlens.detection import Detections, GroundTruth, coco_ap
from oodlens.detection.coco import detections_to_coco, ground_truth_to_coco
from oodlens.detection.matching import greedy_match


def _random_case(seed: int, n_img: int = 25, k: int = 3):
    rng = np.random.default_rng(seed)
    gi, gb, gl, di, db, dl, ds = [], [], [], [], [], [], []
    for i in range(n_img):
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 80, 2).round(1)
            w, h = rng.uniform(5, 30, 2).round(1)
            gi.append(i), gb.append([x, y, x + w, y + h]), gl.append(int(rng.integers(0, k)))
            for _ in range(rng.integers(0, 3)):  # jittered detections of this object
                j = rng.normal(0, 3, 4).round(1)
                b = np.array([x, y, x + w, y + h]) + j
                b[2:] = np.maximum(b[2:], b[:2] + 1)
                di.append(i), db.append(b), dl.append(gl[-1] if rng.random() < 0.8 else int(rng.integers(0, k)))
                ds.append(float(rng.random()))
        for _ in range(rng.integers(0, 3)):  # background false positives
            x, y = rng.uniform(0, 80, 2).round(1)
            di.append(i), db.append([x, y, x + 10, y + 10]), dl.append(int(rng.integers(0, k))), ds.append(float(rng.random()))
    logits = torch.nn.functional.one_hot(torch.tensor(dl), k).float()
    dets = Detections(torch.tensor(di), torch.tensor(np.array(db), dtype=torch.float64), logits,
                      torch.tensor(ds, dtype=torch.float64), n_img, k, classes=torch.tensor(dl))
    gt = GroundTruth(torch.tensor(gi), torch.tensor(np.array(gb), dtype=torch.float64), torch.tensor(gl), n_img)
    return dets, gt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_equals_pycocotools(seed):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dets, gt = _random_case(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = ground_truth_to_coco(gt, 3)
        coco.createIndex()
        res = coco.loadRes(detections_to_coco(dets))
        ev = COCOeval(coco, res, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = coco_ap(dets, gt)
    assert ours.ap() == pytest.approx(ev.stats[0], abs=1e-9)
    assert ours.ap(0.5) == pytest.approx(ev.stats[1], abs=1e-9)
    np.testing.assert_allclose(ours.precision, ev.eval["precision"][:, :, :3, 0, 2], atol=1e-9)
    np.testing.assert_allclose(ours.scores, ev.eval["scores"][:, :, :3, 0, 2], atol=1e-9)


def test_greedy_match_hand_made():
    # one image, two ground truths; the higher-scored detection takes the better-overlapping one
    g = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    d = np.array([[1, 0, 10, 10], [0, 0, 10, 10], [21, 0, 30, 10], [50, 50, 60, 60]], float)
    det_gt, rank, kept = greedy_match(np.array([0.9, 0.8, 0.7, 0.95]), d, np.zeros(4, int), g, np.zeros(2, int))
    assert det_gt[0].tolist() == [0, -1, 1, -1]  # duplicate of gt 0 (lower score) stays unmatched
    assert rank.tolist() == [1, 2, 3, 0] and kept.all()
