"""How much of the bank a partition index (IVF: k-means cells, probe the cells nearest the query) must scan to keep
KNN's recall@k, on ID and on OOD queries — the ceiling on any partition-based approximate speed-up.

For each number of cells and each probed fraction it prints the share of the bank actually scanned ("work": a
partition search can be at most about 1/work faster than the exact one) and recall@k, the fraction of each query's
exact k nearest neighbours that lie in its probed cells (ID and OOD queries separately).

    python benchmarks/knn_partition_recall.py [--data standard|structured] [--queries 2000] [--k 50]

Data as in ``benchmarks/knn_approx.py`` (fit 50 000 × 512 from 100 classes; OOD queries from 100 unseen classes).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from knn_approx import make_features, standard_features
from oodlens.detectors._knn_search import exact_topk


def spherical_kmeans(x: torch.Tensor, cells: int, iters: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit centroids (cells, D) and the cell of every row, by Lloyd iterations on the sphere."""
    g = torch.Generator().manual_seed(seed)
    cent = x[torch.randperm(x.shape[0], generator=g)[:cells]].clone()
    for _ in range(iters):
        assign = (x @ cent.T).argmax(1)
        cent = F.normalize(torch.zeros_like(cent).index_add_(0, assign, x), dim=1)
    return cent, (x @ cent.T).argmax(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="standard", choices=["standard", "structured"])
    p.add_argument("--queries", type=int, default=2000, help="ID and as many OOD queries")
    p.add_argument("--k", type=int, default=50)
    args = p.parse_args()
    cpu = torch.device("cpu")
    if args.data == "standard":
        train, test_id, test_ood = standard_features(50_000, 2 * args.queries, 512, 100, 0, cpu)
    else:
        train, test_id, test_ood = make_features(50_000, 2 * args.queries, 512, 100, 0, cpu)
    bank = F.normalize(train, dim=1)
    q = F.normalize(torch.cat([test_id[: args.queries], test_ood[: args.queries]]), dim=1)
    n_id = min(args.queries, test_id.shape[0])
    _, nn = exact_topk(q, bank, args.k)
    print(f"data {args.data}: bank {bank.shape[0]} x {bank.shape[1]}, {n_id} ID + {q.shape[0] - n_id} OOD queries, "
          f"k={args.k}")
    print("| cells | probed | work (share of bank scanned) | recall ID | recall OOD |\n|--:|--:|--:|--:|--:|")
    for cells in (128, 256, 512):
        cent, assign = spherical_kmeans(bank, cells)
        sizes = torch.bincount(assign, minlength=cells).double()
        order = (q @ cent.T).argsort(1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(cells).expand_as(order))
        needed = rank.gather(1, assign[nn])  # probe rank of each true neighbour's cell
        for frac in (0.05, 0.1, 0.2, 0.35, 0.5):
            probes = max(1, round(frac * cells))
            found = (needed < probes).double().mean(1)
            work = sizes[order[:, :probes]].sum(1).mean() / bank.shape[0]
            print(f"| {cells} | {probes} | {work:.3f} | {found[:n_id].mean():.4f} | {found[n_id:].mean():.4f} |")


if __name__ == "__main__":
    main()
