"""VOS protocol (threshold, samples, FPR95 convention) and open-set metrics on hand-made cases."""

import contextlib
import io

import numpy as np
import pytest
import torch

from oodlens.detection import Detections, GroundTruth
from oodlens.detection.openset import a_ose, open_set_metrics, unknown_ap, unknown_recall, wilderness_impact
from oodlens.detection.vos import vos_evaluate, vos_fpr, vos_threshold


def _naive_vos_fpr(ood_id, ood_ood, level):
    """metric_utils.fpr_and_fdr_at_recall written out: ID positive by -score, closest recall, lowest threshold."""
    pos, neg = -np.asarray(ood_id, float), -np.asarray(ood_ood, float)
    best = None
    for t in sorted(set(np.r_[pos, neg]), reverse=True):  # decreasing thresholds: later = lower
        rec = (pos >= t).mean()
        d = abs(rec - level)
        if best is None or d <= best[0] + 1e-15:
            best = (d, (neg >= t).mean())
        if rec == 1.0:
            break
    return best[1]


@pytest.mark.parametrize("seed", range(4))
def test_vos_fpr_against_naive(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, 57).round(1), rng.normal(1, 1, 43).round(1)  # ties on purpose
    assert vos_fpr(a, b) == pytest.approx(_naive_vos_fpr(a, b, 0.95))


def test_vos_fpr_closest_not_at_least():
    # 20 ID scores: recall steps of 5 %; 0.95 is hit exactly at the 19th ID score
    sid = np.arange(20, dtype=float)  # higher = more OOD
    sood = np.array([18.5, 30.0])
    # recall is exactly 0.95 at ID-ness -18 (no OOD kept) and at -18.5 (one OOD kept): the reference's argmin
    # over the reversed curve takes the lowest threshold, so VOS reports 0.5 where oodlens' 'smallest FPR with
    # recall >= 95 %' reports 0
    from oodlens.metrics import ood_accepted_at_id_kept

    assert vos_fpr(sid, sood) == pytest.approx(0.5)
    assert ood_accepted_at_id_kept(sid, sood) == 0.0
    sid = np.arange(10, dtype=float)  # recall steps of 10 %: 0.9 and 1.0 are equally close; lowest threshold wins
    assert vos_fpr(sid, np.array([8.5])) == pytest.approx(1.0)


def _scene(seed, n_img=30, k=3):
    rng = np.random.default_rng(seed)
    gi, gb, gl, di, db, dl, dc = [], [], [], [], [], [], []
    for i in range(n_img):
        for c in range(k):
            x, y = rng.uniform(0, 60, 2).round(1)
            gi.append(i), gb.append([x, y, x + 20, y + 20]), gl.append(c)
            if rng.random() < 0.85:
                di.append(i), db.append([x + rng.normal(0, 2), y, x + 20, y + 20]), dl.append(c)
                dc.append(rng.uniform(0.3, 1.0))
        for _ in range(2):
            x, y = rng.uniform(0, 60, 2).round(1)
            di.append(i), db.append([x, y, x + 15, y + 15]), dl.append(int(rng.integers(0, k))), dc.append(rng.uniform(0, 0.7))
    d = Detections(torch.tensor(di), torch.tensor(np.array(db)), torch.nn.functional.one_hot(torch.tensor(dl), k).float(),
                   torch.tensor(dc), n_img, k, classes=torch.tensor(dl))
    return d, GroundTruth(torch.tensor(gi), torch.tensor(np.array(gb)), torch.tensor(gl), n_img)


def test_vos_threshold_equals_reference_formula():
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from oodlens.detection.coco import detections_to_coco, ground_truth_to_coco

    dets, gt = _scene(0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = ground_truth_to_coco(gt, 3)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(detections_to_coco(dets)), "bbox")
        ev.params.catIds = [1, 2, 3]
        ev.evaluate()
        ev.accumulate()
    # compute_average_precision.py, line by line
    precisions = ev.eval["precision"].mean(0)[:, :, 0, 2]
    recalls = np.expand_dims(ev.params.recThrs, 1)
    with np.errstate(invalid="ignore"):
        f1 = 2 * (precisions * recalls) / (precisions + recalls)
    opt = f1.argmax(0)
    scores = ev.eval["scores"].mean(0)[:, :, 0, 2]
    thr = np.array([scores[o, i] for i, o in enumerate(opt)])
    assert vos_threshold(dets, gt) == pytest.approx(thr[thr != 0].mean(), abs=1e-12)


def test_vos_samples_are_at_or_above_threshold():
    k = 2
    mk = lambda conf: Detections(torch.zeros(len(conf), dtype=torch.long), torch.tensor([[0, 0, 1, 1.]] * len(conf)),
                                 torch.zeros(len(conf), k), torch.tensor(conf), 1, k)
    id_d, ood_d = mk([0.2, 0.5, 0.9]), mk([0.49, 0.5, 0.7])
    r = vos_evaluate(id_d, ood_d, np.array([9.0, 1.0, 2.0]), np.array([-5.0, 3.0, 4.0]), threshold=0.5)
    assert (r.n_id, r.n_ood) == (2, 2)  # 0.5 kept on both sides, 0.2 / 0.49 dropped (their scores would change AUROC)
    assert r.auroc == 1.0 and r.fpr95 == 0.0


def _open_set_case():
    # image 0: known object (class 0) at A, unknown objects U1 (near) and U2 (far); image 1: known class 1 at C
    A, U1, U2, C = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [0, 0, 10, 10]
    gt = GroundTruth(torch.tensor([0, 0, 0, 1]), torch.tensor([A, U1, U2, C], dtype=torch.float32),
                     torch.tensor([0, -1, -1, 1]), 2, kind=torch.tensor([0, 1, 2, 0]))
    boxes = [A, U1, U1, U2, C, [60, 60, 70, 70]]
    classes = [0, 1, 0, 0, 1, 1]
    conf = [0.9, 0.8, 0.7, 0.6, 0.95, 0.5]
    flagged = np.array([False, False, True, False, False, True])
    ood = np.array([0.1, 0.3, 0.9, 0.2, 0.05, 0.8])
    d = Detections(torch.tensor([0, 0, 0, 0, 1, 1]), torch.tensor(boxes, dtype=torch.float32),
                   torch.nn.functional.one_hot(torch.tensor(classes), 2).float(), torch.tensor(conf), 2, 2,
                   classes=torch.tensor(classes))
    return d, gt, flagged, ood


def test_open_set_hand_made():
    d, gt, flagged, ood = _open_set_case()
    r = unknown_recall(d, gt, flagged, ood)
    assert r["unknown_recall"] == 0.5 and r["unknown_recall_near"] == 1.0 and r["unknown_recall_far"] == 0.0
    # flagged: d2 on U1 (TP, ood .9) then d5 on nothing (FP, ood .8): precision 1 up to recall 0.5 -> AP = 51/101
    assert unknown_ap(d, gt, flagged, ood) == pytest.approx(51 / 101)
    # known-labelled detections on unknown objects: d1 (U1, class 1) and d3 (U2, class 0)
    assert a_ose(d, gt, flagged) == 2
    # class 0 by confidence: d0 TP (recall 1 reached) -> stop; class 1: d4 TP -> stop. No unknown FP in the prefix
    assert wilderness_impact(d, gt, flagged, recall=0.8) == 0.0
    # at recall 1.0 as well; lowering nothing: now make d0 miss (move it) so class 0 must take d3 (an unknown FP)
    m = open_set_metrics(d, gt, flagged, ood)
    assert m["a_ose"] == 2 and m["known_ap50"] == pytest.approx(1.0)


def test_wilderness_impact_counts_unknown_false_positives():
    d, gt, flagged, ood = _open_set_case()
    conf = d.confidence.clone()
    conf[3] = 0.99  # d3 (class 0, on unknown U2) now outranks the true positive d0
    from dataclasses import replace
    d2 = replace(d, confidence=conf)
    # class 0 prefix: d3 (FP on unknown), d0 (TP) -> TP=1, FP=1, FP_U=1; class 1 prefix: d4 -> TP=1
    # WI = FP_U / (TP + FP - FP_U) = 1 / 2
    assert wilderness_impact(d2, gt, flagged, recall=0.8) == pytest.approx(0.5)
