"""Time oodlens's OOD metrics on 10⁷ scores against scikit-learn's (median of several runs, same data).

    python benchmarks/metrics.py [--n 10000000] [--repeats 3]

oodlens computes AUROC, AUPR-in, AUPR-out, both FPR@95 conventions and detection accuracy from one sort
(:func:`oodlens.metrics.ood_metrics`); scikit-learn needs one call per metric — timed here for AUROC alone and
for the same set of metrics (roc_auc_score, two average_precision_score, two roc_curve).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from oodlens.metrics import auroc, ood_metrics


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="total number of scores (half ID, half OOD)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    half = args.n // 2
    sid = rng.normal(0.0, 1.0, half).astype(np.float32)
    sood = rng.normal(1.0, 1.0, args.n - half).astype(np.float32)
    y = np.r_[np.zeros(half), np.ones(args.n - half)]
    s = np.r_[sid, sood]

    def sk_all():
        roc_auc_score(y, s)
        average_precision_score(y, s)
        average_precision_score(1 - y, -s)
        roc_curve(y, s)
        roc_curve(1 - y, -s)

    rows = [
        ("oodlens ood_metrics (all 6 metrics, float32 scores)", _median_time(lambda: ood_metrics(sid, sood), args.repeats)),
        ("oodlens ood_metrics (all 6 metrics, float64 scores)",
         _median_time(lambda: ood_metrics(sid.astype(np.float64), sood.astype(np.float64)), args.repeats)),
        ("oodlens auroc", _median_time(lambda: auroc(sid, sood), args.repeats)),
        ("sklearn roc_auc_score", _median_time(lambda: roc_auc_score(y, s), args.repeats)),
        ("sklearn, same metric set (auc + 2 AP + 2 roc_curve)", _median_time(sk_all, args.repeats)),
    ]
    assert abs(auroc(sid, sood) - roc_auc_score(y, s)) < 1e-9
    base = rows[3][1]
    print(f"n = {args.n:,} scores, median of {args.repeats} runs")
    print("| what | seconds | × sklearn roc_auc_score |")
    print("|:--|--:|--:|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
