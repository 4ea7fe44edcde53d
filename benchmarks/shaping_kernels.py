"""Per-row top-k selection for the activation-shaping detectors (ASH, SCALE): the compiled counting selection of
``oodlens.detectors._select`` against ``numpy.partition``, ``torch.topk`` and ``torch.kthvalue``, and the parts of
a shaped score (head product, selection + shaping, logsumexp).

    python benchmarks/shaping_kernels.py                 # 40 000 × 512 rectified Gaussian rows, k at 10/35/50 %
    python benchmarks/shaping_kernels.py --rows 10000 --dim 2048

Times are the minimum of ``--repeats`` runs (the least disturbed by other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import numpy as np
import torch

from oodlens.detectors import _order_stats as order_stats
from oodlens.detectors import _shaping as shaping


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=40_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    kernels = shaping.compiled_kernels()
    if kernels is None:
        raise SystemExit("numba is not installed: nothing to compare")
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(args.rows, args.dim, generator=g) + 0.5).clamp_min_(0)
    w = torch.randn(args.classes, args.dim, generator=g) / args.dim ** 0.5
    a = x.numpy()
    block = shaping.COMPILED_BLOCK_ELEMENTS // args.dim
    out = np.empty((block, args.dim), dtype=np.float32)

    def compiled(k: int, mode: int) -> None:
        for i in range(0, args.rows, block):
            order_stats.top_k_rows_compiled(kernels, a[i:i + block], k, mode, None if mode == kernels.STATS else
                                        out[:min(block, args.rows - i)])

    print(f"{args.rows:,} × {args.dim} float32, {torch.get_num_threads()} threads; best of {args.repeats}, ms\n")
    print(f"head product x @ W.T (C={args.classes}): {best_of(lambda: x @ w.T, args.repeats) * 1e3:.1f}")
    logits = x @ w.T
    print(f"logsumexp of the logits: {best_of(lambda: torch.logsumexp(logits, 1), args.repeats) * 1e3:.1f}\n")
    print("| k | compiled: sums (SCALE) | compiled: + prune (ASH-P/S) | np.partition | torch.topk | torch.kthvalue |")
    print("|---|---|---|---|---|---|")
    for frac in (0.10, 0.35, 0.50):
        k = max(1, int(round(frac * args.dim)))
        row = [best_of(lambda: compiled(k, kernels.STATS), args.repeats),
               best_of(lambda: compiled(k, kernels.PRUNE), args.repeats),
               best_of(lambda: np.partition(a, args.dim - k, axis=1), args.repeats),
               best_of(lambda: torch.topk(x, k, dim=1, sorted=False), args.repeats),
               best_of(lambda: torch.kthvalue(x, args.dim - k + 1, dim=1), args.repeats)]
        print(f"| {k} | " + " | ".join(f"{t * 1e3:.1f}" for t in row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
