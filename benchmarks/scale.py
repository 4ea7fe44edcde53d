"""oodlens.scale throughput with 1 and 2 Ray workers on this machine, and a cost model for sharded KNN at 10⁸ bank
vectors on 16 machines.

Measured (each worker count on a fresh local Ray cluster with that many CPUs; a Ray worker runs torch on one
thread), against one process with as many torch threads:

* fit — ``fit_shards(Mahalanobis)``: Gaussian statistics per shard file (one task each), merged; rows / s;
* score — ``score_dataset(Mahalanobis)`` over a Ray Dataset of feature rows; rows / s;
* knn — ``ShardedKNN`` with the bank split over the workers, queries / s and bank-vector products / s per worker,
  and the driver's merge time per query.

The data is ``benchmarks/detectors.py``'s standard workload (fit 50 000 × 512, 100 classes). Then the model: the
measured per-worker product rate and merge cost, scaled to N = 10⁸ bank vectors over M = 16 machines of C cores,
and the bytes each query puts on the network. Printed with every assumption.

    python benchmarks/scale.py [--bank 50000] [--queries 4000] [--score-rows 40000] [--shards 10] [--k 50]
                               [--machines 16] [--cores 32] [--bank-total 1e8] [--link-gbit 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from oodlens.detectors import get_detector
from oodlens.features import Features
from oodlens import scale

try:
    from detectors import PRESETS, Sizes, make_workload  # type: ignore
except ImportError:  # pragma: no cover
    from .detectors import PRESETS, Sizes, make_workload


def write_shards(folder: str, z: torch.Tensor, y: torch.Tensor, shards: int) -> list[str]:
    bounds = np.linspace(0, z.shape[0], shards + 1).astype(int)
    return [scale.write_shard(os.path.join(folder, f"shard-{a:012d}.safetensors"), Features(features=z[a:b]),
                              torch.arange(a, b), y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def timed(fn, repeats: int = 2):
    """(result, best wall time of ``repeats`` calls): the minimum is the least disturbed by other load."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def measure(workers: int, paths: list[str], train: torch.Tensor, y: torch.Tensor, queries: torch.Tensor,
            score_rows: torch.Tensor, k: int) -> dict[str, float]:
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    scale.init_local(num_cpus=workers)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        out: dict[str, float] = {}
        scale.fit_shards(get_detector("mahalanobis")(), paths)  # warm-up: worker processes import torch
        det, t = timed(lambda: scale.fit_shards(get_detector("mahalanobis")(), paths))
        out["fit"] = train.shape[0] / t
        ds = ray.data.from_numpy(score_rows.numpy()).rename_columns({"data": "features"}).repartition(8).materialize()
        scale.collect_scores(scale.score_dataset(det, ds.limit(4096), workers=workers), order_by=None)  # warm-up
        _, t = timed(lambda: scale.collect_scores(scale.score_dataset(det, ds, workers=workers, batch_size=4096),
                                                  order_by=None))
        out["score"] = score_rows.shape[0] / t
        knn = scale.ShardedKNN(paths, k=k, workers=workers)
        knn.score(queries[:64])  # warm-up
        _, t = timed(lambda: knn.score(queries))
        width = k + 8
        v = torch.randn(queries.shape[0], workers * width)
        i = torch.randint(0, train.shape[0], v.shape)
        _, t_merge = timed(lambda: torch.argsort(v, dim=1, descending=True, stable=True).gather(1, torch.argsort(i, 1)))
        knn.close()
        out["knn_qps"] = queries.shape[0] / t
        out["knn_pairs_per_worker"] = queries.shape[0] * train.shape[0] / t / workers
        out["merge_us"] = 1e6 * t_merge / queries.shape[0]
        return out
    finally:
        ray.shutdown()


def one_process(threads: int, train: torch.Tensor, y: torch.Tensor, queries: torch.Tensor, score_rows: torch.Tensor,
                k: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    get_detector("knn")(k=k, backend="torch").fit({"features": train[:1000]}).score({"features": queries[:64]})
    det, t = timed(lambda: get_detector("mahalanobis")().fit({"features": train}, y))
    out = {"fit": train.shape[0] / t}
    _, t = timed(lambda: det.score({"features": score_rows}))
    out["score"] = score_rows.shape[0] / t
    knn = get_detector("knn")(k=k, backend="torch").fit({"features": train})
    _, t = timed(lambda: knn.score({"features": queries}))
    out["knn_qps"] = queries.shape[0] / t
    out["knn_pairs_per_worker"] = queries.shape[0] * train.shape[0] / t / threads
    return out


def model(args, per_worker_pairs: float, merge_us: float) -> None:
    n, m, c, d, k = args.bank_total, args.machines, args.cores, 512, args.k
    width = k + 8
    per_machine = n / m
    qps_machine = c * per_worker_pairs / per_machine  # every machine scans its whole shard for every query
    nominal = args.core_gflops * 1e9 / (2 * d)  # products / s of one idle core at the nominal rate
    qps_nominal = c * nominal / per_machine
    link = args.link_gbit * 1e9 / 8
    bytes_out = m * 4 * d  # the query to every machine
    bytes_back = m * width * 16  # (similarity f32, index i64, distance f32) per candidate
    qps_net = link / (bytes_out + bytes_back)
    merge_query_us = merge_us * m / args.workers_measured  # merge work grows with the M·K candidates
    cells = 2 * per_machine ** 0.5
    qps_merge = 1e6 / merge_query_us
    print(f"""
### Cost model: exact sharded KNN, N = {n:.0e} bank vectors (D = {d}, float32) on M = {m} machines

Assumptions: every machine holds N/M = {per_machine:.2e} vectors ({per_machine * d * 4 / 2**30:.1f} GiB float32, in
memory) and scans all of them for every query; a machine has C = {c} cores, each doing the measured per-worker
rate of {per_worker_pairs:.3e} query·bank-vector products / s (this machine, 1 torch thread per worker, under the
load printed above; an idle server core does several times more); one driver merges; a {args.link_gbit:g} Gbit/s
link at the driver; K = k + 8 = {width} candidates per shard.

* compute: {per_machine:.2e} × {d} × 2 = {2 * per_machine * d / 1e9:.1f} GFLOP per query per machine →
  at the measured rate {qps_machine:.2f} queries / s for the cluster (all machines work on every query in
  parallel; {1000 / qps_machine:.0f} ms per query); at a nominal {args.core_gflops:g} GFLOP/s per idle core
  ({nominal:.2e} products / s) {qps_nominal:.1f} queries / s ({1000 / qps_nominal:.0f} ms per query);
* merge: M × K = {m * width} candidates per query, sorted by the driver: ≈ {merge_query_us:.1f} µs per query
  (measured {merge_us:.1f} µs for {args.workers_measured} × {width}, scaled linearly) → ≈ {qps_merge:.0f} queries / s
  on one driver core;
* network per query: {bytes_out} B out (the query to {m} machines) + {bytes_back} B back ({m} × {width} × 16 B) =
  {(bytes_out + bytes_back) / 1024:.1f} KiB → ≤ {qps_net:.0f} queries / s on the driver's link — also not the
  bottleneck;
* so the exact search is compute-bound ({qps_machine:.2f} – {qps_nominal:.1f} queries / s). The IVF search
  (``KNN(search="ivf")``) with its default 2√n = {cells:.0f} cells per shard and P probes scans P / {cells:.0f} of each
  shard plus {cells:.0f} centroid products per query: ≈ {cells / 8 / (1 + cells * cells / 8 / per_machine):.0f}× less
  compute at P = 8, at the same network bytes — whether 8 probes keep the AUROC at that size must be measured
  (``benchmarks/knn_approx_detector.py`` measured 447 cells, 8 probes on 50 000 vectors).
* fit from statistics: each machine sends D² float64 = {d * d * 8 / 2**20:.0f} MiB of Gaussian statistics (plus
  C·D means); the merge is M − 1 pairwise updates of O(D² + C·D) — seconds, against hours of extraction.
""")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bank", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=4_000)
    p.add_argument("--score-rows", type=int, default=40_000)
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--machines", type=int, default=16)
    p.add_argument("--cores", type=int, default=32)
    p.add_argument("--bank-total", type=float, default=1e8)
    p.add_argument("--link-gbit", type=float, default=10.0)
    p.add_argument("--core-gflops", type=float, default=50.0, help="nominal float32 GFLOP/s of one idle core")
    args = p.parse_args()
    sz = Sizes(**{**PRESETS["standard"].__dict__, "n_fit": args.bank, "n_score": max(args.queries, 200)})
    w = make_workload("standard", sz, 0)
    train, y = w.train["features"], w.labels
    queries = w.test["features"][: args.queries]
    score_rows = train[torch.arange(args.score_rows) % train.shape[0]]
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = write_shards(folder, train, y, args.shards)
        for workers in (1, 2):
            rows[f"one process, {workers} thread(s)"] = one_process(workers, train, y, queries, score_rows, args.k)
            rows[f"Ray, {workers} worker(s)"] = measure(workers, paths, train, y, queries, score_rows, args.k)
    print(f"\n### Throughput on this machine ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}): bank "
          f"{args.bank} × 512 in {args.shards} shard files, {args.queries} KNN queries (k = {args.k}), "
          f"{args.score_rows} rows scored\n")
    print("| setup | fit rows/s | score rows/s | KNN queries/s | KNN products/s per worker | merge µs/query |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, r in rows.items():
        merge = f"{r['merge_us']:.1f}" if "merge_us" in r else "—"
        print(f"| {name} | {r['fit']:.0f} | {r['score']:.0f} | {r['knn_qps']:.1f} | {r['knn_pairs_per_worker']:.3e} | "
              f"{merge} |")
    ray2 = rows["Ray, 2 worker(s)"]
    args.workers_measured = 2
    model(args, ray2["knn_pairs_per_worker"], ray2["merge_us"])


if __name__ == "__main__":
    main()
