"""``oodlens demo digits``: train a small CNN on digits 0–5, extract features once (cached), and benchmark every
detector whose needs the model meets on near-OOD (digits 6–9), far-OOD (photo patches, uniform noise) and
covariate-shifted digits (rotation, noise, blur at severities 1–5). Tuning uses validation OOD (patches of a
different photograph) only."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ...detectors import Head
from ...extract import extract
from ...features import Features
from ..cache import SplitCache
from ..datasets.digits import DigitsCNN, load_digits_splits, train_digits_cnn
from ..protocol import Benchmark, TestSet
from ..report import build_report, write_reports
from ..runner import BenchmarkResult, run_benchmark

SUMMARY = "a CNN on digits 0–5 vs near (6–9), far (photos, noise) and covariate-shifted digits (the default)"
CACHE_VERSION = "digits-v2"
POOLED_LAYERS = {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "pool": "features"}
MAP_LAYERS = {"layer2": "layer2_map", "layer3": "layer3_map"}
#: hyper-parameters that point multi-layer / model-based detectors at this CNN's layers
DETECTOR_PARAMS: dict[str, dict[str, Any]] = {
    "gram": {"layers": ["layer2_map", "layer3_map"]},
    "multi_mahalanobis": {"layers": ["layer1", "layer2", "layer3", "features"]},
    "rankfeat": {"features": "layer3_map"},
    "mahalanobis_noise": {"layer": "pool"},
    "particul": {"maps": "layer3_map"},
}
#: what the zero-shot rows measure on a CNN without a text tower (said in the report instead of a warning)
ZERO_SHOT_NOTE = ("no text encoder for a digits CNN: the class 'prompts' of mcm and neglabel are the rows of the "
                  "CNN's last linear layer and neglabel's negative labels are seeded random unit vectors, so these "
                  "rows test the scoring rules, not vision-language zero-shot detection")
#: smaller grids for the detectors that back-propagate through the model for every candidate
PARAM_GRIDS: dict[str, dict[str, list]] = {
    "odin": {"temperature": [1.0, 1000.0], "noise": [0.0, 0.0014, 0.004]},
    "mahalanobis_noise": {"noise": [0.0, 0.0014, 0.005]},
}


def _features_of(model: torch.nn.Module, x: torch.Tensor) -> Features:
    pooled, _ = extract(model, x, layers=POOLED_LAYERS, progress=False)
    maps, _ = extract(model, x, layers=MAP_LAYERS, pool="none", logits=False, progress=False)
    return pooled.merge(maps).merge({"inputs": x})


def build_digits_benchmark(cache_dir: str | Path = ".oodlens_cache", seed: int = 0, progress: bool = True,
                           covariate_mode: str = "separate") -> tuple[Benchmark, dict[str, Any]]:
    """The digits benchmark with features from the cache when present (else: train, extract, cache)."""
    cache = SplitCache(cache_dir, f"{CACHE_VERSION}-seed{seed}")
    model = DigitsCNN()
    info: dict[str, Any] = {"cache": str(cache.folder)}
    if cache.complete:
        feats, labels, extra = cache.load(model)
        info.update(extra, cached=True)
    else:
        splits = load_digits_splits(seed)
        model = train_digits_cnn(splits.inputs["train"], splits.labels["train"], seed=seed, progress=progress)
        feats = {name: _features_of(model, x) for name, x in splits.inputs.items()}
        labels = splits.labels
        extra = {"kinds": splits.kinds, "groups": {k: list(v) for k, v in splits.groups.items()}}
        cache.save(feats, labels, model, extra)
        info.update(extra, cached=False)
    test_sets = []
    for name, kind in info["kinds"].items():
        group, severity = info["groups"].get(name, (None, None))
        test_sets.append(TestSet(name, feats[name], kind, labels.get(name), group, severity))
    bench = Benchmark(
        name="digits: CNN on digits 0-5", train=feats["train"], train_labels=labels["train"], val=feats["val"],
        val_labels=labels["val"], test=feats["test"], test_labels=labels["test"], test_sets=test_sets,
        val_ood=feats["val_ood"], head=Head.coerce(model.fc), model=model, covariate_mode=covariate_mode,
        detector_params=DETECTOR_PARAMS, param_grids=PARAM_GRIDS,
    )
    return bench, info


def run_digits(cache_dir: str | Path = ".oodlens_cache", seed: int = 0, detectors: list[str] | None = None,
               progress: bool = True) -> tuple[BenchmarkResult, dict[str, Any]]:
    start = time.perf_counter()
    bench, info = build_digits_benchmark(cache_dir, seed, progress)
    info["prepare_seconds"] = time.perf_counter() - start
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_benchmark(bench, detectors, progress=progress)
    for w in caught:  # NegLabel's stand-in warning becomes a stated note; anything else is shown as it was
        if not (issubclass(w.category, UserWarning) and str(w.message).startswith("NegLabel got no candidates")):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    info["zero_shot_note"] = ZERO_SHOT_NOTE if {"mcm", "neglabel"} & set(result.detectors) else None
    info["total_seconds"] = time.perf_counter() - start
    return result, info


def run_demo(args: Any) -> int:
    """Entry point of ``oodlens demo digits``."""
    detectors = [d.strip() for d in args.detectors.split(",")] if getattr(args, "detectors", None) else None
    seed = getattr(args, "seed", 0)
    result, info = run_digits(getattr(args, "cache", ".oodlens_cache"), seed, detectors,
                              progress=not getattr(args, "no_progress", False))
    source = "loaded from cache" if info["cached"] else "trained and extracted (cold)"
    settings = {"seed": seed, "features": f"{source} ({info['cache']})",
                "model": "CNN (16/32/64 channels) trained on digits 0–5; validation OOD: patches of another photo"}
    if info.get("zero_shot_note"):
        settings["zero-shot rows"] = info["zero_shot_note"]
    out = getattr(args, "out", None)
    report = build_report(result, settings=settings, calibration=True, figures=bool(out))
    print(report.to_markdown(level=2))
    print(f"Features {source} in {info['prepare_seconds']:.1f} s ({info['cache']}); "
          f"{len(result.detectors)} detectors; total {info['total_seconds']:.1f} s.")
    if out:
        paths = write_reports(result, out, report=report)
        print("Wrote " + ", ".join(str(p) for p in paths))
    return 0
