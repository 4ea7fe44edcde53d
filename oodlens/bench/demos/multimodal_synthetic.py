"""``oodlens demo multimodal-synthetic``: a synthetic two-modality benchmark with known ground truth, comparing a baseline
model with A2D and A2D + NP-Mix training (MultiOOD) under MSP, Energy, MaxLogit, Mahalanobis and KNN.

**Data** (seeded, generated in memory). Two modalities, ``video`` (32-d, cleaner) and ``flow`` (32-d, noisier):
each class c has one random prototype per modality, and a sample is ``x_m = P_m[c] + σ_m · ε`` (σ_video = 1.0,
σ_flow = 1.6, prototypes of scale 0.45), so each modality alone is an imperfect classifier and fusing them helps.
Test sets, each scored against the ID test split:

* ``near-OOD`` (kind near): 4 held-out classes. In each modality a new class's prototype is a blend of a fresh
  direction and the prototype of an ID class — a *different* ID class in each modality (a new action that looks like
  "run" in the flow and like "ball game" in the video). This is the modality prediction discrepancy that MultiOOD
  observed on real data and that A2D is designed to amplify.
* ``far-OOD`` (kind far): another "dataset": unrelated prototypes of twice the scale, a constant offset and 1.3×
  the noise, in both modalities.
* one-sensor failures (kind sensor), made from the ID test samples: ``video blanked`` / ``flow blanked`` (all
  zeros) and ``video noise`` / ``flow noise`` (replaced by Gaussian noise with the modality's per-dimension ID
  standard deviation). The other modality is intact, so the label is still predictable; whether such inputs
  should be flagged is the user's choice — they are reported as their own rows.

**Model and training**: per-modality MLP encoders (32 → 64 → 32), per-modality linear heads and a fused linear head
(:class:`~oodlens.multimodal.model.MultimodalClassifier`), trained with :mod:`oodlens.multimodal.trainer` using the
README presets of MultiOOD (baseline: fused CE; A2D: single-prediction CE + 1.0 · A2D (Hellinger);
A2D + NP-Mix: single-prediction CE + 0.5 · A2D + 0.5 · entropy + 0.5 · discrepancy on NP-Mix outliers with queue 65,
k = 3, α = 10). Deviations for a CPU demo: 20 epochs (not 50) with outlier synthesis from epoch 4 (not 10 —
the same 20 % warm-up share), batch 32 (not 16) and learning rate 1e-3 (not 1e-4, as the encoders start from
scratch rather than from pretrained backbones). The best-validation-accuracy weights are kept; trained weights
are cached in ``--cache`` as safetensors.

**Evaluation** as in MultiOOD: detectors fitted on ID training features, fused logits / concatenated embeddings,
``ood_accepted_at_95_id`` (FPR95: OOD accepted while 95 % of ID is kept) and AUROC. A second table scores the
sensor-failure rows with modality-wise detectors fused by the max of per-modality z-scores (calibrated on ID
validation) and reports how often attribution names the failed modality.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ...detectors import available_detectors, get_detector
from ...multimodal.model import MultimodalClassifier, mlp_encoder
from ...multimodal.protocol import evaluate
from . import _multimodal_common as _common
from ._args import demo_options
from ._multimodal_report import html_report, render

SUMMARY = "synthetic Gaussian two-modality benchmark with known ground truth (MultiOOD training variants)"
DEFAULT_DETECTORS = ("msp", "energy", "maxlogit", "mahalanobis", "knn")
VARIANTS = _common.VARIANTS
CACHE_VERSION = "mm-demo-v1"


@dataclass
class SyntheticConfig:
    """Sizes and noise of the synthetic benchmark."""

    num_classes: int = 8
    num_near: int = 4
    dims: dict[str, int] = field(default_factory=lambda: {"video": 32, "flow": 32})
    noise: dict[str, float] = field(default_factory=lambda: {"video": 1.0, "flow": 1.6})
    proto_scale: float = 0.45
    near_blend: float = 0.7  # weight of the borrowed ID-class prototype in a near-OOD prototype
    n_train: int = 120  # per class
    n_val: int = 50
    n_test: int = 100
    n_ood: int = 600  # per OOD set


@dataclass
class DemoConfig(_common.Budget):
    data: SyntheticConfig = field(default_factory=SyntheticConfig)

    @classmethod
    def fast(cls) -> "DemoConfig":
        """A reduced configuration for tests (a few seconds)."""
        return cls(data=SyntheticConfig(n_train=60, n_val=30, n_test=40, n_ood=160), epochs=6, start_epoch=2)


# -- data -----------------------------------------------------------------------------------------------------
def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def make_synthetic(cfg: SyntheticConfig, seed: int = 0) -> dict[str, Any]:
    """Raw inputs per split: ``{split: {modality: (N, d)}}``, labels for ID splits and the kind of each test set."""
    g = torch.Generator().manual_seed(seed)
    mods = list(cfg.dims)
    c, k = cfg.num_classes, cfg.num_near
    protos, near_protos = {}, {}
    for m in mods:
        d = cfg.dims[m]
        p = _unit_rows(torch.randn(c, d, generator=g)) * cfg.proto_scale * d ** 0.5
        borrowed = torch.randperm(c, generator=g)[:k]  # a different random ID class per modality
        fresh = _unit_rows(torch.randn(k, d, generator=g)) * cfg.proto_scale * d ** 0.5
        b = cfg.near_blend
        near_protos[m] = b * p[borrowed] + (1 - b * b) ** 0.5 * fresh
        protos[m] = p

    def draw(proto: dict[str, torch.Tensor], per: int, noise_mult: float = 1.0, offset: float = 0.0):
        y = torch.arange(proto[mods[0]].shape[0]).repeat_interleave(per)
        y = y[torch.randperm(y.numel(), generator=g)]
        xs = {m: proto[m][y] + offset + noise_mult * cfg.noise[m] * torch.randn(y.numel(), cfg.dims[m], generator=g)
              for m in mods}
        return xs, y

    data: dict[str, Any] = {"inputs": {}, "labels": {}, "kinds": {}}
    for split, per in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        data["inputs"][split], data["labels"][split] = draw(protos, per)
    data["inputs"]["near-OOD"], _ = draw(near_protos, max(1, cfg.n_ood // k))
    data["kinds"]["near-OOD"] = "near"
    far = {m: _unit_rows(torch.randn(c, cfg.dims[m], generator=g)) * 2 * cfg.proto_scale * cfg.dims[m] ** 0.5 for m in mods}
    data["inputs"]["far-OOD"], _ = draw(far, max(1, cfg.n_ood // c), noise_mult=1.3, offset=0.5)
    data["kinds"]["far-OOD"] = "far"
    test = data["inputs"]["test"]
    std = {m: data["inputs"]["train"][m].std(0) for m in mods}
    for m in mods:
        blank = dict(test)
        blank[m] = torch.zeros_like(test[m])
        data["inputs"][f"{m} blanked"] = blank
        data["kinds"][f"{m} blanked"] = "sensor"
    for m in mods:
        noisy = dict(test)
        noisy[m] = torch.randn(test[m].shape, generator=g) * std[m]
        data["inputs"][f"{m} noise"] = noisy
        data["kinds"][f"{m} noise"] = "sensor"
    return data


# -- training ---------------------------------------------------------------------------------------------------
def build_model(cfg: DemoConfig, seed: int) -> MultimodalClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dims = cfg.data.dims
        enc = {m: mlp_encoder(dims[m], cfg.hidden, cfg.embed) for m in dims}
        return MultimodalClassifier(enc, {m: cfg.embed for m in dims}, cfg.data.num_classes)


def train_variant(variant: str, data: dict[str, Any], cfg: DemoConfig, seed: int, cache: Path | None,
                  progress: bool) -> tuple[MultimodalClassifier, dict[str, Any]]:
    """Train (or load from the cache) the model of one variant: ``baseline``, ``a2d``, ``a2d_npmix`` or
    ``a2d_feature_mixing``."""
    return _common.train_variant(variant, lambda: build_model(cfg, seed), data, cfg.train_args(), seed, cache,
                                 {"v": CACHE_VERSION, "demo": asdict(cfg)}, progress)


benchmark_of = _common.benchmark_of
modality_rows = _common.modality_rows


def run_benchmark(cfg: DemoConfig | None = None, seed: int = 0, detectors: Sequence[str] | None = None,
                  variants: dict[str, str] | None = None, cache: str | Path | None = None, progress: bool = True,
                  notes: list[str] | None = None) -> dict[str, Any]:
    """Train every variant, evaluate, and return tidy results (used by the demo and its tests)."""
    import pandas as pd

    cfg = cfg or DemoConfig()
    variants = variants or VARIANTS
    notes = notes if notes is not None else []
    known = set(available_detectors())
    if detectors is None:
        missing = [d for d in DEFAULT_DETECTORS if d not in known]
        if missing:
            notes.append(f"detectors not registered yet, skipped: {', '.join(missing)}")
        detectors = [d for d in DEFAULT_DETECTORS if d in known]
    else:
        for d in detectors:
            get_detector(d)  # unknown names raise with suggestions
    cache_dir = _common.cache_folder(cache, "multimodal")
    data = make_synthetic(cfg.data, seed)
    frames, att_rows, acc_rows = [], [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the models are tiny: extra threads only add synchronisation (10x slower when busy)
    try:
        for label, variant in variants.items():
            _run_variant(label, variant, data, cfg, seed, cache_dir, progress, detectors, notes, frames, att_rows, acc_rows)
    finally:
        torch.set_num_threads(threads)
    return {"results": pd.concat(frames, ignore_index=True), "accuracy": pd.DataFrame(acc_rows),
            "modality_wise": pd.DataFrame(att_rows), "detectors": list(detectors), "notes": notes,
            "variants": list(variants)}


def _run_variant(label: str, variant: str, data: dict[str, Any], cfg: DemoConfig, seed: int, cache_dir: Path | None,
                 progress: bool, detectors: Sequence[str], notes: list[str], frames: list, att_rows: list,
                 acc_rows: list) -> None:
    """Train (or load) one variant, evaluate it, and append its rows."""
    model, info = train_variant(variant, data, cfg, seed, cache_dir, progress)
    bench = benchmark_of(model, data)
    df, acc = evaluate(bench, detectors, heads=model.all_heads(), fusion=None,
                       on_skip=lambda msg: notes.append(msg) if msg not in notes else None)
    df.insert(0, "training", label)
    frames.append(df)
    acc_rows.append({"training": label, **{f"acc_{k}": v for k, v in acc.items()},
                     "best_val_acc": info.get("best_val_acc"), "cached": info.get("cached")})
    att_rows += [{"training": label, **r} for r in modality_rows(bench, detectors, model.all_heads())]


def run_demo(args: Any) -> int:
    """Entry point of ``oodlens demo multimodal-synthetic``."""
    t0 = time.perf_counter()
    opt = demo_options(args)
    res = run_benchmark(DemoConfig.fast() if opt.fast else DemoConfig(), seed=opt.seed, detectors=opt.detectors,
                        cache=opt.cache, progress=opt.progress)
    text = render(res, time.perf_counter() - t0)
    print(text)
    if opt.out is not None:
        folder = opt.out
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "multimodal.md").write_text(text + "\n", encoding="utf-8")
        res["results"].to_csv(folder / "multimodal_results.csv", index=False)
        res["modality_wise"].to_csv(folder / "multimodal_modality_wise.csv", index=False)
        res["accuracy"].to_csv(folder / "multimodal_accuracy.csv", index=False)
        html_report(res, time.perf_counter() - t0, {"seed": opt.seed}).write(folder / "multimodal.html")
    return 0
