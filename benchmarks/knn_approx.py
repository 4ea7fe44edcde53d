"""KNN detector: exact search vs the raw inner-product pass, and the ``"half"`` search (float16 candidates, certified
exact re-rank) vs exact.

Prints, as the median of ``--runs`` runs (each on freshly generated data with its own seed):

* raw   — one pass of test × train float32 inner products in the same blocks as the exact search, into one reused
          buffer, without any top-k (the floor any exact brute-force search pays);
* exact — ``KNN(search="exact")``: fit, then score (``--backend torch`` by default; ``faiss`` where installed);
* half  — ``KNN(search="half")``: fit, then score (``--candidates`` multiples of k re-ranked exactly);
* speed-ups of half over exact (score only), recall@k of the half search's neighbours against the exact ones (the
  fraction of its k neighbours at least as similar as the exact k-th), for ID and OOD queries, the rows that failed
  the certificate and were searched exactly, and the machine load (``os.getloadavg``) before each run.

Data (``--data``): ``standard`` — the workload of ``benchmarks/detectors.py`` (default fit 50 000 × 512 from 100
classes, score 40 000: half ID, half from 100 unseen classes; isotropic unit noise around the class centres);
``structured`` — each class a mean plus a shared low-rank within-class variation (decaying spectrum) plus small
isotropic noise, through a ReLU; OOD rows from unseen classes of the same generator.

    python benchmarks/knn_approx.py [--data standard|structured] [--n-train 50000] [--n-test 40000] [--dim 512]
                                    [--classes 100] [--k 50] [--runs 3] [--candidates 2] [--backend torch|faiss]
                                    [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from oodlens.detectors._knn_search import _block
from oodlens.detectors.knn import KNN

try:  # the standard workload lives beside this script
    from detectors import PRESETS, Sizes, make_workload  # type: ignore
except ImportError:  # pragma: no cover - imported as benchmarks.knn_approx
    from .detectors import PRESETS, Sizes, make_workload


def standard_features(n_train: int, n_test: int, dim: int, classes: int, seed: int, device: torch.device
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    sz = Sizes(**{**PRESETS["standard"].__dict__, "n_fit": n_train, "n_score": n_test, "dim": dim,
                  "classes": classes, "n_val": 2 * classes})
    w = make_workload("standard", sz, seed)
    z = w.test["features"]
    return w.train["features"].to(device), z[: w.n_test_id].to(device), z[w.n_test_id:].to(device)


def make_features(n_train: int, n_test: int, dim: int, classes: int, seed: int,
                  device: torch.device, ood_fraction: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rank = 64
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=g))[0] * torch.logspace(0, -1.5, rank)[None, :]
    means = 1.5 * torch.randn(2 * classes, dim, generator=g) / dim ** 0.5 * 8

    def draw(n: int, first_class: int) -> torch.Tensor:
        y = torch.randint(first_class, first_class + classes, (n,), generator=g)
        h = torch.randn(n, rank, generator=g) * 4
        return torch.relu(means[y] + h @ basis.T + 0.3 * torch.randn(n, dim, generator=g))

    n_id = round(n_test * (1 - ood_fraction))
    return (draw(n_train, 0).to(device), draw(n_id, 0).to(device), draw(n_test - n_id, classes).to(device))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def raw_pass(query: torch.Tensor, bank: torch.Tensor) -> float:
    """Blocks of query rows against the whole bank into one reused buffer, as ``exact_topk`` does, no top-k."""
    rows = min(query.shape[0], max(1, _block(query.device) // bank.shape[0]))
    buf = query.new_empty(rows, bank.shape[0])
    acc = query.new_zeros(())
    for i in range(0, query.shape[0], rows):
        s = buf[: min(rows, query.shape[0] - i)]
        torch.matmul(query[i:i + rows], bank.T, out=s)
        acc += s[:, 0].sum()  # keep the product live
    return float(acc)


def recall(approx_sims: torch.Tensor, exact_sims: torch.Tensor) -> torch.Tensor:
    """Per query: fraction of the approximate k neighbours at least as similar as the exact k-th (ties count)."""
    kth = exact_sims[:, -1:]
    return (approx_sims >= kth - 1e-6).to(torch.float64).mean(1)


def one_run(args, seed: int, device: torch.device) -> dict[str, float]:
    if args.data == "standard":
        train, test_id, test_ood = standard_features(args.n_train, args.n_test, args.dim, args.classes, seed, device)
    else:
        train, test_id, test_ood = make_features(args.n_train, args.n_test, args.dim, args.classes, seed, device,
                                                 args.ood_fraction)
    test = {"features": torch.cat([test_id, test_ood])}
    n_id = test_id.shape[0]
    load = os.getloadavg()[0]
    exact = KNN(k=args.k, search="exact", backend=args.backend)
    half = KNN(k=args.k, search="half", candidates=args.candidates)
    q = F.normalize(test["features"], dim=1)
    bank = F.normalize(train, dim=1)
    t_raw, _ = timed(lambda: raw_pass(q, bank), device)
    t_exact_fit, _ = timed(lambda: exact.fit({"features": train}), device)
    exact.score(test)  # warm-up (CUDA kernels, allocator)
    t_exact_score, s_exact = timed(lambda: exact.score(test), device)
    t_half_fit, _ = timed(lambda: half.fit({"features": train}), device)
    half.score(test)  # warm-up; also builds the float16 copy of the bank once
    t_half_score, s_half = timed(lambda: half.score(test), device)
    fallbacks = half.last_fallbacks
    sims_exact, _ = exact.neighbours(test)
    sims_half, _ = half.neighbours(test)
    r = recall(sims_half, sims_exact)
    return {
        "load": load, "raw": t_raw, "exact_fit": t_exact_fit, "exact_score": t_exact_score,
        "half_fit": t_half_fit, "half_score": t_half_score,
        "exact_over_raw": t_exact_score / t_raw,
        "speedup_score": t_exact_score / t_half_score,
        "recall": float(r.mean()), "recall_id": float(r[:n_id].mean()),
        "recall_ood": float(r[n_id:].mean()) if r.numel() > n_id else float("nan"),
        "fallback_rows": float(fallbacks),
        "max_score_gap": float((s_half - s_exact).abs().max()),
    }


def profile(args, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    train, test_id, test_ood = standard_features(args.n_train, args.n_test, args.dim, args.classes, 0, device)
    test = {"features": torch.cat([test_id, test_ood])}
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for search in ("exact", "half"):
        det = KNN(k=args.k, search=search, backend="torch", candidates=args.candidates).fit({"features": train})
        det.score(test)
        with torch_profile(activities=acts) as prof:
            det.score(test)
            _sync(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(f"-- {search}\n" + prof.key_averages().table(sort_by=key, row_limit=12))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-train", type=int, default=50_000)
    p.add_argument("--n-test", type=int, default=40_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--candidates", type=float, default=2.0, help="half search: candidates per query, × k")
    p.add_argument("--data", default="standard", choices=["standard", "structured"])
    p.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators of one "
                   "exact and one half score")
    p.add_argument("--ood-fraction", type=float, default=0.5, help="share of OOD rows among the scored ones")
    p.add_argument("--backend", default="torch", choices=["torch", "faiss", "auto"])
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"data {args.data}: fit {args.n_train} x {args.dim}, score {args.n_test}, k={args.k}, "
          f"backend={args.backend}, device={device}, "
          f"threads={torch.get_num_threads()}, runs={args.runs}")
    runs = [one_run(args, seed, device) for seed in range(args.runs)]
    if args.profile:
        profile(args, device)
    for i, r in enumerate(runs):
        print(f"  run {i}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if runs[0][k] is not None}
    print(f"median raw inner-product pass  {med['raw']:.3f} s")
    print(f"median exact: fit {med['exact_fit']:.3f} s, score {med['exact_score']:.3f} s "
          f"({med['exact_over_raw']:.2f}x the raw pass)")
    print(f"median half:  fit {med['half_fit']:.3f} s, score {med['half_score']:.3f} s "
          f"({args.candidates:g}·k candidates; {med['fallback_rows']:.0f} of {args.n_test} rows failed the "
          f"certificate and were searched exactly)")
    print(f"median speed-up half vs exact (score): {med['speedup_score']:.2f}x")
    print(f"median recall@{args.k}: {med['recall']:.4f} (ID {med['recall_id']:.4f}, OOD {med['recall_ood']:.4f}); "
          f"max |score_half - score_exact| {med['max_score_gap']:.2e}; load average {med['load']:.2f} "
          f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
