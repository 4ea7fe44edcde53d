"""``oodlens demo multimodal``: does MultiOOD's Agree-to-Disagree effect reproduce on real signals, over seeds?

**Data**: scikit-learn's handwritten digits seen by three different sensors — a blurred noisy camera, projection
profiles at four angles, and a gradient-magnitude (edge) rendering (:mod:`oodlens.bench.datasets.digit_sensors`).
ID = digits 0–5, near-OOD = digits 6–9, far-OOD = photo patches seen by every sensor, one-sensor failures
(blanked, noise, misregistered sensors) and a covariate shift of the camera only.

**Models**: one MLP encoder per sensor (d → 64 → 32), a head per sensor and a fused head
(:class:`~oodlens.multimodal.model.MultimodalClassifier`), trained by :mod:`oodlens.multimodal.trainer` with
MultiOOD's presets — baseline (fused CE), A2D, A2D + NP-Mix, A2D + Feature Mixing, and the control "sensor CE"
(the baseline plus a cross-entropy on every sensor's head: A2D without its discrepancy term, so that A2D's own
effect can be isolated; the plain baseline leaves the sensor heads untrained) — from the same initialisation
per seed, with the same budget (30 epochs, batch 32, Adam 1e-3, outlier synthesis from epoch 6), over 3 seeds.

**What it measures**: fused-detector AUROC / FPR95 (OOD accepted while 95 % of ID is kept, MultiOOD's FPR@95)
and ID accuracy as mean ± standard deviation over seeds; the *prediction discrepancy* between sensors (mean
pairwise Hellinger distance of the sensors' softmax outputs) on ID and OOD inputs — the mechanism A2D is claimed
to widen; and detector fusion across sensors (per-sensor detectors combined by z-score max / mean, Fisher, min-p,
harmonic-mean p-values, and a logistic fusion learned on validation OOD only) against the fused head's own score.
Differences are called real only when the 95 % t-interval of the paired per-seed differences excludes zero.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ...detectors import create, get_detector
from ...features import Features
from ...fusion import ScoreFusion
from ...metrics import ood_metrics
from ...multimodal.losses import pairwise_discrepancy
from ...multimodal.model import MultimodalClassifier, mlp_encoder
from ...multimodal.modality_fusion import ModalityWiseDetector
from ...multimodal.protocol import Benchmark, evaluate
from ..datasets.digit_sensors import SENSOR_DIMS, SENSORS, load_digit_sensors
from . import _multimodal_common as _common
from ._args import demo_options
from ._multimodal_report import FPR

SUMMARY = "three sensors of real digits (camera, projection profiles, edges): MultiOOD's A2D / NP-Mix over 3 seeds"
CACHE_VERSION = "mm-sensors-v1"
#: "sensor CE" is the control for A2D: the same per-sensor cross-entropy terms, without the discrepancy term
VARIANTS = {"baseline": "baseline", "sensor CE": "baseline+single_pred", "A2D": "a2d", "A2D+NP-Mix": "a2d_npmix",
            "A2D+FeatMix": "a2d_feature_mixing"}
#: the variant whose per-sensor heads are trained without A2D: the reference for A2D's effect and for fusion
CONTROL = "sensor CE"
DEFAULT_DETECTORS = ("msp", "energy", "maxlogit", "mahalanobis", "knn")
#: fusion rules compared across sensors (oodlens.fusion names) and how the tables call them
FUSION_RULES = {"zscore_max": "z max", "zscore": "z mean", "fisher": "Fisher p", "bonferroni": "min-p",
                "harmonic": "harmonic p", "logistic": "logistic (val OOD)"}
FUSION_MEMBERS = ("energy", "mahalanobis")


@dataclass
class SensorDemoConfig(_common.Budget):
    epochs: int = 30
    start_epoch: int = 6
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: dict[str, str] = field(default_factory=lambda: dict(VARIANTS))

    @classmethod
    def fast(cls) -> "SensorDemoConfig":
        """A reduced configuration for tests."""
        return cls(seeds=(0, 1), epochs=4, start_epoch=1,
                   variants={"baseline": "baseline", CONTROL: "baseline+single_pred", "A2D": "a2d"})


def build_model(cfg: SensorDemoConfig, seed: int) -> MultimodalClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = {m: mlp_encoder(SENSOR_DIMS[m], cfg.hidden, cfg.embed) for m in SENSORS}
        return MultimodalClassifier(enc, {m: cfg.embed for m in SENSORS}, 6)


def sensor_discrepancy(feats: Features, modalities: Sequence[str]) -> torch.Tensor:
    """Per input, the mean pairwise Hellinger distance between the sensors' softmax predictions."""
    probs = [feats[f"{m}/logits"].softmax(1) for m in modalities]
    return pairwise_discrepancy(probs, "hellinger")


def fusion_rows(bench: Benchmark, val_ood: Features, heads: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-sensor detectors fused by each rule (calibrated on ID validation; 'logistic' also learns from the
    validation OOD set, never a test set), and each member detector on the fused head / concatenated features."""
    rows = []
    for member in FUSION_MEMBERS:
        mw = ModalityWiseDetector(member, bench.modalities).fit(bench.train, bench.train_labels, heads=heads)
        val, v_ood = mw.modality_scores(bench.val), mw.modality_scores(val_ood)
        test = mw.modality_scores(bench.test)
        ood = {name: mw.modality_scores(feats) for name, feats in bench.ood.items()}  # once, for every rule
        for rule, label in FUSION_RULES.items():
            fuse = ScoreFusion(rule).fit(val, ood_scores=v_ood if rule == "logistic" else None)
            s_id = fuse.score(test)
            for name, scores in ood.items():
                m = ood_metrics(s_id, fuse.score(scores))
                rows.append({"member": member, "fusion": label, "test_set": name, "kind": bench.kinds[name],
                             "auroc": m["auroc"], FPR: m[FPR]})
        det = create(member).fit(bench.train, bench.train_labels, head=heads["fused"])
        s_id = det.score(bench.test)
        for name, feats in bench.ood.items():
            m = ood_metrics(s_id, det.score(feats))
            rows.append({"member": member, "fusion": "fused head", "test_set": name, "kind": bench.kinds[name],
                         "auroc": m["auroc"], FPR: m[FPR]})
    return rows


def run_benchmark(cfg: SensorDemoConfig | None = None, data_seed: int = 0, detectors: Sequence[str] | None = None,
                  cache: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Train every variant for every seed, evaluate, and return tidy DataFrames (used by the demo and tests)."""
    import pandas as pd

    cfg = cfg or SensorDemoConfig()
    detectors = list(detectors or DEFAULT_DETECTORS)
    for d in detectors:
        get_detector(d)  # unknown names raise with suggestions
    cache_dir = _common.cache_folder(cache, "multimodal-sensors")
    sensors = load_digit_sensors(data_seed)
    data = {"inputs": sensors.inputs, "labels": sensors.labels, "kinds": sensors.kinds}
    train_args = cfg.train_args()
    key = {"v": CACHE_VERSION, "data_seed": data_seed, "hidden": cfg.hidden, "embed": cfg.embed}
    out: dict[str, list] = {"results": [], "accuracy": [], "discrepancy": [], "fusion": [], "sensor_wise": []}
    notes: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: extra threads only add synchronisation
    try:
        for seed in cfg.seeds:
            for label, variant in cfg.variants.items():
                model, _ = _common.train_variant(variant, lambda: build_model(cfg, seed), data, train_args, seed,
                                                 cache_dir, key, progress)
                bench = _common.benchmark_of(model, data)
                heads = model.all_heads()
                df, acc = evaluate(bench, detectors, heads=heads, fusion=None,
                                   on_skip=lambda msg: notes.append(msg) if msg not in notes else None)
                tag = {"training": label, "seed": seed}
                out["results"] += [{**tag, **r} for r in df.to_dict("records")]
                out["accuracy"].append({**tag, **acc})
                for name in ("test", "near-OOD", "far-OOD", "misregistered"):
                    feats = bench.test if name == "test" else bench.ood[name]
                    d = sensor_discrepancy(feats, bench.modalities)
                    out["discrepancy"].append({**tag, "set": "ID test" if name == "test" else name,
                                               "discrepancy": float(d.mean())})
                out["sensor_wise"] += [{**tag, **r} for r in _common.modality_rows(bench, ["energy"], heads)]
                if label in (CONTROL, "A2D"):
                    val_ood = model.extract(sensors.inputs["val_ood"])
                    out["fusion"] += [{**tag, **r} for r in fusion_rows(bench, val_ood, heads)]
    finally:
        torch.set_num_threads(threads)
    res = {k: pd.DataFrame(v) for k, v in out.items()}
    res.update(notes=notes, config=asdict(cfg), detectors=detectors, variants=list(cfg.variants), control=CONTROL)
    return res


def run_demo(args: Any) -> int:
    """Entry point of ``oodlens demo multimodal``."""
    from ._multimodal_sensors_report import render, write

    t0 = time.perf_counter()
    opt = demo_options(args)
    cfg = SensorDemoConfig.fast() if opt.fast else SensorDemoConfig()
    res = run_benchmark(cfg, opt.seed, opt.detectors, opt.cache, opt.progress)
    text = render(res, time.perf_counter() - t0)
    print(text)
    if opt.out is not None:
        write(res, text, opt.out)
    return 0
