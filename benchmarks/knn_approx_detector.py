"""Approximate KNN judged as a detector: ``KNN(search="ivf")`` against ``KNN(search="exact")``, side by side.

For each workload it prints the score time of both (median over ``--runs`` paired runs: exact then IVF, back to
back, so load drift hits both), the speed-up (median of the paired ratios), the fit time, and per OOD set the
AUROC and FPR@95 of both detectors and their differences (targets: speed-up ≥ 5×, |ΔAUROC| ≤ 0.002,
|ΔFPR95| ≤ 0.5 points). FPR@95 here is the fraction of OOD accepted while 95 % of ID is kept (the MSP / ODIN / KNN
papers' convention; ``oodlens.metrics.ood_accepted_at_id_kept``). Also: the share of queries whose IVF score equals
the exact one, and a check that no IVF score is below the exact one.

Workloads: ``standard`` — ``benchmarks/detectors.py``'s (fit 50 000 × 512 from 100 classes, score 40 000: half ID,
half from 100 unseen classes); ``structured`` — ``benchmarks/knn_approx.py``'s low-rank class structure (harder:
neighbours spread over cells); ``digits`` — the digits demo's penultimate features (CNN on digits 0–5: ID test vs
digits 6–9, photo patches, uniform noise), read from the demo's cache (built on first use: trains the CNN).

    python benchmarks/knn_approx_detector.py [--workloads standard,structured,digits] [--k 50] [--probes 8]
                                             [--cells N] [--runs 3] [--threads 2] [--cache .oodlens_cache]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from oodlens.detectors.knn import KNN
from oodlens.metrics.ood import auroc, ood_accepted_at_id_kept

try:
    from detectors import PRESETS, make_workload  # type: ignore
    from knn_approx import make_features  # type: ignore
except ImportError:  # pragma: no cover - imported as a package
    from .detectors import PRESETS, make_workload
    from .knn_approx import make_features


def standard() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    w = make_workload("standard", PRESETS["standard"], 0)
    z = w.test["features"]
    return w.train["features"], z[: w.n_test_id], {"unseen classes": z[w.n_test_id:]}


def structured() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    train, test_id, test_ood = make_features(50_000, 40_000, 512, 100, 0, torch.device("cpu"))
    return train, test_id, {"unseen classes": test_ood}


def digits(cache: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    from oodlens.bench.demos.digits import build_digits_benchmark

    bench, _ = build_digits_benchmark(cache, 0, progress=False)
    ood = {t.name: t.features["features"] for t in bench.test_sets if t.kind in ("near", "far")}
    return bench.train["features"], bench.test["features"], ood


def timed(det: KNN, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    t = time.perf_counter()
    s = det.score(x)
    return s, time.perf_counter() - t


def run(name: str, data, args) -> None:
    train, test_id, ood = data
    queries = torch.cat([test_id, *ood.values()])
    fit = {}
    dets = {}
    for search in ("exact", "ivf"):
        t = time.perf_counter()
        dets[search] = KNN(k=args.k, search=search, probes=args.probes, cells=args.cells,
                           backend="torch").fit({"features": train})
        fit[search] = time.perf_counter() - t
    times = {"exact": [], "ivf": []}
    ratios = []
    for _ in range(args.runs):
        s_exact, te = timed(dets["exact"], {"features": queries})
        s_ivf, ta = timed(dets["ivf"], {"features": queries})
        times["exact"].append(te)
        times["ivf"].append(ta)
        ratios.append(te / ta)
    cells = dets["ivf"].ivf_centroids_.shape[0]
    print(f"\n### {name}: bank {train.shape[0]} × {train.shape[1]}, {queries.shape[0]} queries "
          f"({test_id.shape[0]} ID), k={args.k}, IVF {cells} cells, {args.probes} probed "
          f"(≈{min(args.probes, cells) / cells:.1%} of the bank), torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}\n")
    print(f"score time: exact {statistics.median(times['exact']):.3f} s, IVF {statistics.median(times['ivf']):.3f} s, "
          f"speed-up {statistics.median(ratios):.2f}× (median of {args.runs} paired runs: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); fit: exact {fit['exact']:.2f} s, IVF {fit['ivf']:.2f} s; "
          f"IVF fallbacks to exact: {dets['ivf'].last_fallbacks}")
    same = float((s_ivf - s_exact).abs().le(1e-6).double().mean())
    n_id = test_id.shape[0]
    print(f"IVF score = exact on {same:.1%} of queries (ID {float((s_ivf[:n_id] - s_exact[:n_id]).abs().le(1e-6).double().mean()):.1%}); "
          f"no IVF score below exact: {bool((s_ivf >= s_exact - 1e-6).all())}\n")
    print("| OOD set | AUROC exact | AUROC IVF | ΔAUROC | FPR95 exact % | FPR95 IVF % | ΔFPR95 (points) |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    start = n_id
    for ood_name, z in ood.items():
        sl = slice(start, start + z.shape[0])
        start += z.shape[0]
        a_e, a_a = auroc(s_exact[:n_id], s_exact[sl]), auroc(s_ivf[:n_id], s_ivf[sl])
        f_e = 100 * ood_accepted_at_id_kept(s_exact[:n_id], s_exact[sl])
        f_a = 100 * ood_accepted_at_id_kept(s_ivf[:n_id], s_ivf[sl])
        print(f"| {ood_name} | {a_e:.4f} | {a_a:.4f} | {a_a - a_e:+.5f} | {f_e:.2f} | {f_a:.2f} | {f_a - f_e:+.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="standard,structured,digits")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--probes", type=int, default=8)
    p.add_argument("--cells", type=int, default=None)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", default=".oodlens_cache")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    makers = {"standard": standard, "structured": structured, "digits": lambda: digits(args.cache)}
    for name in args.workloads.split(","):
        run(name, makers[name](), args)


if __name__ == "__main__":
    main()
