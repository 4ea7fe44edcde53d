"""Time the evaluation of 10⁶ boxes over 10⁵ images against a plain numpy sort of the same scores.

    python benchmarks/detection_eval.py [--images 100000] [--boxes-per-image 10] [--repeats 3]

Timed (median of ``--repeats`` runs, same data): COCO AP@[.5:.95] (ten IoU thresholds, greedy matching
vectorised over images, 101-point precision), the VOS box metrics (AUROC, FPR95 on the boxes above a
confidence threshold), the open-set metrics (unknown recall, AP_U, A-OSE, WI) and a per-track aggregation
(EMA) — against ``np.sort`` of the 10⁶ scores, the floor any ranking metric pays.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from oodlens.detection import Detections, GroundTruth, coco_ap
from oodlens.detection.openset import open_set_metrics
from oodlens.detection.temporal import aggregate
from oodlens.detection.vos import vos_evaluate


def make(n_img: int, per_img: int, k: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_gt = n_img * 3
    gi = np.repeat(np.arange(n_img), 3)
    gxy = rng.uniform(0, 500, (n_gt, 2))
    gwh = rng.uniform(10, 100, (n_gt, 2))
    gl = np.where(rng.random(n_gt) < 0.1, -1, rng.integers(0, k, n_gt))
    n = n_img * per_img
    src = rng.integers(0, n_gt, n)  # each detection jitters some ground truth of its image (or is background)
    di = gi[src]
    j = rng.normal(0, 6, (n, 4))
    b = np.c_[gxy[src], gxy[src] + gwh[src]] + j
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
    cls = np.where(rng.random(n) < 0.8, np.maximum(gl[src], 0), rng.integers(0, k, n))
    logits = torch.from_numpy(rng.normal(size=(n, k)).astype(np.float32))
    dets = Detections(torch.from_numpy(di), torch.from_numpy(b.astype(np.float32)), logits,
                      torch.from_numpy(rng.random(n).astype(np.float32)), n_img, k, classes=torch.from_numpy(cls))
    gt = GroundTruth(torch.from_numpy(gi), torch.from_numpy(np.c_[gxy, gxy + gwh].astype(np.float32)),
                     torch.from_numpy(gl), n_img)
    return dets, gt


def median_time(fn, repeats: int) -> float:
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--boxes-per-image", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    dets, gt = make(a.images, a.boxes_per_image)
    scores = torch.randn(dets.n).numpy().astype(np.float32)
    half = dets.n // 2
    track = np.arange(dets.n) // 10
    frame = np.arange(dets.n) % 10
    ood_d = dets.subset(torch.arange(half, dets.n))
    id_d = dets.subset(torch.arange(0, half))
    flagged = scores > 1.0
    rows = [
        ("np.sort of the scores (floor)", lambda: np.sort(scores)),
        ("COCO AP@[.5:.95] (10 IoU thresholds)", lambda: coco_ap(dets, gt)),
        ("VOS box metrics (AUROC, FPR95, AUPR)", lambda: vos_evaluate(id_d, ood_d, scores[:half], scores[half:], 0.2)),
        ("open-set metrics (U-recall, AP_U, A-OSE, WI, known mAP)", lambda: open_set_metrics(dets, gt, flagged, scores)),
        ("per-track EMA (10⁵ tracks of 10)", lambda: aggregate(scores, track, frame, "ema")),
    ]
    floor = None
    print(f"{dets.n:,} boxes over {a.images:,} images, {gt.n:,} ground-truth objects; median of {a.repeats} runs; "
          f"torch threads {torch.get_num_threads()}\n")
    print("| step | seconds | × np.sort |\n|---|---|---|")
    for name, fn in rows:
        t = median_time(fn, a.repeats)
        floor = floor or t
        print(f"| {name} | {t:.3f} | {t / floor:.1f} |", flush=True)


if __name__ == "__main__":
    main()
