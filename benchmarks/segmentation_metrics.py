"""Streamed pooled pixel metrics over ~10⁹ pixels: time, time per 10⁸ pixels against a plain numpy sort of 10⁸
scores, peak memory, and the difference from the exact sort-based metrics.

    .venv/bin/python benchmarks/segmentation_metrics.py                 # 500 frames of 1024×2048 = 1.05·10⁹ px
    .venv/bin/python benchmarks/segmentation_metrics.py --frames 50     # a quick run

Frames are Cityscapes-sized (1024 × 2048). A pool of ``--pool`` distinct frames (scores: 60 % saturated
MSP-like values in [−1, −0.999], the rest N(0, 3); 1 % anomaly pixels shifted by +0.8; 2 % ignore pixels) is
cycled, so generating data costs nothing inside the timed loop. The exact metrics are computed on the first
``--exact-frames`` frames (a sort of all their pixels) and compared with a streamed run over the same frames.
Peak memory is the process's maximum resident set size (ru_maxrss), data pool included.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from oodlens.segmentation import StreamingPixelMetrics, exact_pixel_metrics

H, W = 1024, 2048


def make_pool(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(n):
        lab = (rng.random((H, W), dtype=np.float32) < 0.01).astype(np.uint8)
        lab[rng.random((H, W), dtype=np.float32) < 0.02] = 255
        sat = rng.random((H, W), dtype=np.float32) < 0.6
        s = np.where(sat, -1 + 1e-3 * rng.random((H, W), dtype=np.float32),
                     3 * rng.standard_normal((H, W), dtype=np.float32)).astype(np.float32)
        s += (lab == 1) * np.float32(0.8)
        pool.append((s, lab))
    return pool


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--exact-frames", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sort-pixels", type=float, default=1e8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pool = make_pool(args.pool)
    base_mb = peak_mb()

    StreamingPixelMetrics(threads=1).update(pool[0][0][:8], pool[0][1][:8])  # load the kernels outside the timing
    acc = StreamingPixelMetrics(threads=args.threads)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for i in range(args.frames):
        s, lab = pool[i % len(pool)]
        acc.update(s, lab)
    t_update = time.perf_counter() - t0
    t1 = time.perf_counter()
    m = acc.compute()
    t_compute = time.perf_counter() - t1
    cpu = time.process_time() - cpu0
    total = t_update + t_compute
    pixels = args.frames * H * W
    print(f"streamed: {args.frames} frames of {H}×{W} = {pixels / 1e9:.3f}·10⁹ pixels in {total:.1f} s "
          f"(updates {t_update:.1f} s, curve {t_compute:.2f} s; CPU {cpu:.1f} s on {args.threads} threads) "
          f"= {total / pixels * 1e8:.2f} s per 10⁸ pixels")
    stream_peak = peak_mb()
    print(f"peak memory (max RSS) while streaming: {stream_peak:.0f} MB, of which data pool + interpreter "
          f"before counting: {base_mb:.0f} MB")
    print(f"AUROC {m['auroc']:.6f}  AP {m['ap']:.6f}  FPR95 {m['fpr95']:.6f}  (AUROC tie bound "
          f"{m['auroc_tie_bound']:.1e})")

    k = min(args.exact_frames, args.frames)
    frames = [pool[i % len(pool)] for i in range(k)]
    s_all = np.concatenate([f[0].ravel() for f in frames])
    l_all = np.concatenate([f[1].ravel() for f in frames])
    del acc
    streamed = StreamingPixelMetrics(threads=args.threads)
    for s, lab in frames:
        streamed.update(s, lab)
    got = streamed.compute()
    t2 = time.perf_counter()
    exact = exact_pixel_metrics(s_all, l_all)
    t_exact = time.perf_counter() - t2
    diffs = "  ".join(f"{key} {got[key] - exact[key]:+.2e}" for key in ("auroc", "ap", "fpr95"))
    print(f"difference streamed − exact on {k} frames ({k * H * W / 1e6:.0f}·10⁶ pixels): {diffs} "
          f"(exact sort-based metric took {t_exact:.1f} s)")
    del s_all, l_all

    n_sort = int(args.sort_pixels)
    x = np.random.default_rng(1).standard_normal(n_sort, dtype=np.float32)
    t3 = time.perf_counter()
    x.sort()
    t_sort = time.perf_counter() - t3
    print(f"numpy sort of {n_sort / 1e8:g}·10⁸ float32 scores: {t_sort:.1f} s = {t_sort / n_sort * 1e8:.2f} s per "
          f"10⁸ (streamed metrics: {total / pixels * 1e8:.2f} s per 10⁸ pixels, "
          f"{(t_sort / n_sort) / (total / pixels):.1f}× faster than the sort alone)")
    target = 30.0 * pixels / 1e9
    verdict = "met" if total <= target else f"missed by {total - target:.1f} s ({total / target:.2f}× the target)"
    print(f"target ≤ 30 s per 10⁹ pixels (here ≤ {target:.1f} s): {verdict}; memory target ≤ 1 GB: "
          f"{'met' if stream_peak <= 1024 else 'missed'} (max RSS while streaming {stream_peak:.0f} MB)")


if __name__ == "__main__":
    main()
