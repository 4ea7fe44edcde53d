"""``oodlens demo training``: plain cross-entropy vs LogitNorm, Outlier Exposure, energy fine-tuning, MixOE, VOS,
NPOS and AbeT on the digits CNN — same initialisation, same budget, 3 seeds — each scored with its own score and
with post-hoc detectors on top; ID accuracy and near / far / covariate AUROC and FPR95 as mean ± std."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ._training_report import build, write
from ._training_runs import (CACHE_VERSION, EPOCHS, METHOD_FACTORIES, METHOD_TITLES, POST_HOC, abet_diagnostic, evaluate,
                             load_data, trained_model)

SUMMARY = "training-time OOD methods (LogitNorm, OE, energy, MixOE, VOS, NPOS, AbeT) vs cross-entropy on digits, 3 seeds"
N_SEEDS = 3


def run_demo(args: Any) -> int:
    """Entry point of ``oodlens demo training``."""
    start = time.perf_counter()
    seed0 = int(getattr(args, "seed", 0) or 0)
    seeds = list(range(seed0, seed0 + N_SEEDS))
    progress = not getattr(args, "no_progress", False)
    chosen = getattr(args, "detectors", None)
    post_hoc = tuple(d.strip() for d in chosen.split(",")) if chosen else POST_HOC
    cache = Path(getattr(args, "cache", ".oodlens_cache")) / CACHE_VERSION
    data = load_data()
    rows, trained, cached, train_seconds, abet_parts = [], 0, 0, 0.0, []
    for method in METHOD_FACTORIES:
        for seed in seeds:
            model, info = trained_model(method, seed, data, cache, progress)
            cached += int(info["cached"])
            trained += int(not info["cached"])
            train_seconds += info["seconds"]
            if method == "abet":
                abet_parts.append(abet_diagnostic(model, data))
            for row in evaluate(model, method, data, post_hoc):
                rows.append({"method": method, "seed": seed, **row, "best_epoch": info["best_epoch"]})
    total = time.perf_counter() - start
    timing = (f"seeds {seeds}; {trained} networks trained ({train_seconds:.0f} s), {cached} loaded from the cache "
              f"({cache}); total {total:.0f} s")
    settings = {
        "seeds and time": timing,
        "budget": f"{EPOCHS} epochs, batch 64, Adam 2e-3, weight decay 1e-4, cosine schedule, ±1 px shifts; "
                  "same initialisation per seed for every method",
        "outliers (OE, energy FT, MixOE)": "8×8 patches of flower.jpg (never a test set)",
        "methods": "; ".join(f"{METHOD_TITLES[k]}: {f()!r}" for k, f in METHOD_FACTORIES.items()),
        "post-hoc detectors": ", ".join(post_hoc),
        "threads": str(getattr(args, "threads", 1)),
    }
    notes = ["VOS and NPOS queues hold 200 features per class (digits have ≈108 training images per class; the "
             "reference's 1000 would never fill); VOS starts at 40 % of the budget as the reference (epoch 40 of 100).",
             "NPOS trains with cross-entropy instead of the reference's CIDER loss (same network for every method).",
             "Energy fine-tuning uses the margins of the MixOE reference's energy baseline (m_in = −13, m_out = −6): "
             "the paper's CIFAR-10 margins (−25, −7) sit far below this network's ID energies (median −3.7 for "
             "cross-entropy) and, trained from scratch here (the paper fine-tunes a pre-trained network), drove "
             "validation accuracy down to 46 % (seed 0, measured).",
             "OE, energy FT and MixOE draw one outlier per ID image per step (the references use 2:1 for OE/energy)."]
    if abet_parts:
        mean = {k: sum(p[k] for p in abet_parts) / len(abet_parts) for k in abet_parts[0]}
        notes.append("AbeT's parts alone (AUROC ×100, mean over seeds; near / far / covariate): learned temperature "
                     "T(x) " + " / ".join(f"{100 * mean[f'{k} T']:.1f}" for k in ("near", "far", "covariate")) +
                     "; cosine numerator −max h(x) " +
                     " / ".join(f"{100 * mean[f'{k} cos']:.1f}" for k in ("near", "far", "covariate")) +
                     ". Where T(x) sits near chance, dividing by it blurs a good cosine score; the AbeT paper notes "
                     "that its gain needs misclassified training examples, and these networks fit the ID training "
                     "set almost perfectly.")
    rep = build(rows, METHOD_TITLES, settings, notes)
    print(rep.to_markdown())
    print(timing)
    out = getattr(args, "out", None)
    if out:
        paths = write(rep, rows, out)
        print("Wrote " + ", ".join(str(p) for p in paths))
    return 0
