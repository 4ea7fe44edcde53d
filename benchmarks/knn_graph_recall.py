"""A graph index (faiss HNSW) as KNN's approximate search on the CPU: its speed-up over the exact search and its
recall@k on ID and on OOD queries.

For each ``--ef`` (the search's candidate-list size; larger is slower and more exact) it prints the search time,
its speed-up over ``KNN(search="exact")`` on the same queries, and recall@k — the fraction of the returned k
neighbours at least as similar as the exact k-th — for ID queries and for OOD queries (unseen classes) separately.
The graph's build time (once, at fit) is printed too.

    python benchmarks/knn_graph_recall.py [--data standard|structured] [--m 32] [--ef 64,128,256]

Needs ``faiss`` (``pip install faiss-cpu``), which oodlens does not depend on. Data as in
``benchmarks/knn_approx.py`` (fit 50 000 × 512 from 100 classes, score 40 000: half ID, half from 100 unseen
classes; features L2-normalised, inner-product search, k = 50).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from knn_approx import make_features, standard_features
from oodlens.detectors.knn import KNN


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="standard", choices=["standard", "structured"])
    p.add_argument("--n-train", type=int, default=50_000)
    p.add_argument("--n-test", type=int, default=40_000)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--m", type=int, default=32, help="HNSW links per node")
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef", default="64,128,256", help="comma-separated efSearch values")
    args = p.parse_args()
    try:
        import faiss
    except ImportError:
        raise SystemExit("faiss is not installed (pip install faiss-cpu)")
    cpu = torch.device("cpu")
    make = standard_features if args.data == "standard" else make_features
    train, test_id, test_ood = make(args.n_train, args.n_test, 512, 100, 0, cpu)
    n_id = test_id.shape[0]
    test = torch.cat([test_id, test_ood])
    exact = KNN(k=args.k, search="exact", backend="torch").fit({"features": train})
    t0 = time.perf_counter()
    sims_exact, _ = exact.neighbours({"features": test})
    t_exact = time.perf_counter() - t0
    kth = sims_exact[:, -1:].numpy()
    print(f"data {args.data}: fit {args.n_train} × 512, {test.shape[0]} queries ({n_id} ID), k = {args.k}, "
          f"{torch.get_num_threads()} threads; exact search (torch) {t_exact:.2f} s")

    bank = np.ascontiguousarray(F.normalize(train, dim=1).numpy())
    queries = np.ascontiguousarray(F.normalize(test, dim=1).numpy())
    index = faiss.IndexHNSWFlat(bank.shape[1], args.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    t0 = time.perf_counter()
    index.add(bank)
    print(f"HNSW (M = {args.m}, efConstruction = {args.ef_construction}) build: {time.perf_counter() - t0:.1f} s\n")
    print("| efSearch | search | speed-up vs exact | recall@k ID | recall@k OOD |")
    print("|--:|--:|--:|--:|--:|")
    for ef in sorted({max(int(e), args.k) for e in args.ef.split(",")}):  # faiss needs efSearch ≥ k
        index.hnsw.efSearch = ef
        t0 = time.perf_counter()
        sims, _ = index.search(queries, args.k)
        t = time.perf_counter() - t0
        recall = (sims >= kth - 1e-6).mean(1)
        print(f"| {ef} | {t:.2f} s | {t_exact / t:.2f}× | {recall[:n_id].mean():.4f} | {recall[n_id:].mean():.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
