"""What the multimodal demos share: training one variant (cached as safetensors), features of every split, and
modality-wise detectors with attribution for one-sensor failures."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ...metrics import ood_metrics
from ...multimodal.modality_fusion import ModalityWiseDetector
from ...multimodal.model import MultimodalClassifier
from ...multimodal.protocol import Benchmark
from ...multimodal.trainer import TrainConfig, Trainer
from ._multimodal_report import FPR

@dataclass
class Budget:
    """The training budget and model width every variant of a multimodal demo shares."""

    epochs: int = 20
    start_epoch: int = 4
    lr: float = 1e-3
    batch_size: int = 32
    hidden: int = 64
    embed: int = 32

    def train_args(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "start_epoch": self.start_epoch}


#: label in the tables -> MultiOOD training preset
VARIANTS = {"baseline": "baseline", "A2D": "a2d", "A2D+NP-Mix": "a2d_npmix"}


def cache_folder(cache: str | Path | None, name: str) -> Path | None:
    """``cache/name`` (created), or None when the demo runs without a cache."""
    if cache is None:
        return None
    folder = Path(cache) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def train_variant(variant: str, build: Callable[[], MultimodalClassifier], data: Mapping[str, Any],
                  train_args: Mapping[str, Any], seed: int, cache: Path | None, key: Mapping[str, Any],
                  progress: bool) -> tuple[MultimodalClassifier, dict[str, Any]]:
    """Train (or load from ``cache``) the model of one preset (``baseline``, ``a2d``, ``a2d_npmix``,
    ``a2d_feature_mixing``; ``baseline+single_pred`` is the baseline with a cross-entropy on every modality's head
    too — A2D without its discrepancy term); ``key`` is everything else the weights depend on."""
    preset, _, extra = variant.partition("+")
    overrides = {"single_pred": True} if extra == "single_pred" else {}
    tcfg = TrainConfig.preset(preset, seed=seed, **train_args, **overrides)
    model = build()
    digest = hashlib.sha256(json.dumps({"key": key, "train": tcfg.__dict__, "seed": seed}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:16]
    path = cache / f"{variant}-seed{seed}-{digest}.safetensors" if cache is not None else None
    if path is not None and path.is_file():
        meta = model.load_weights(path)
        return model.eval(), {**meta, "cached": True}
    trainer = Trainer(model, tcfg, device="cpu", progress=progress)
    res = trainer.fit(data["inputs"]["train"], data["labels"]["train"], data["inputs"]["val"], data["labels"]["val"],
                      checkpoint=path)
    return model.eval(), {"best_val_acc": res.best_val_acc, "best_epoch": res.best_epoch, "cached": False}


def benchmark_of(model: MultimodalClassifier, data: Mapping[str, Any]) -> Benchmark:
    """Features of every split; the test sets are those ``data["kinds"]`` names."""
    feats = {name: model.extract(x) for name, x in data["inputs"].items()}
    ood = {k: feats[k] for k in data["kinds"]}
    return Benchmark(feats["train"], data["labels"]["train"], feats["val"], data["labels"]["val"],
                     feats["test"], data["labels"]["test"], ood, dict(data["kinds"]))


def modality_rows(bench: Benchmark, detectors: Sequence[str], heads: dict[str, Any] | None = None,
                  rule: str = "max_z") -> list[dict[str, Any]]:
    """Modality-wise detectors fused by ``rule`` on every test set: AUROC, FPR95 and, for one-sensor failures,
    the share of rows attributed to the failed modality."""
    from ...detectors import get_detector

    rows = []
    for name in detectors:
        if get_detector(name).needs_model:
            continue
        mw = ModalityWiseDetector(name, bench.modalities, rule=rule)
        mw.fit(bench.train, bench.train_labels, heads=heads).calibrate(bench.val)
        s_id = mw.score(bench.test)
        for test_name, feats in bench.ood.items():
            scores = mw.modality_scores(feats)
            fused = mw.calibration_.fuse(scores, rule).to(torch.float32)
            m = ood_metrics(s_id, fused)
            row = {"detector": name, "test_set": test_name, "kind": bench.kinds[test_name], "auroc": m["auroc"],
                   FPR: m[FPR], "attributed": float("nan")}
            failed = test_name.split(" ", 1)[0]
            if bench.kinds[test_name] == "sensor" and failed in bench.modalities:
                share = mw.calibration_.attribute(scores).share()
                row["attributed"] = share[failed]
                row.update({f"share {m}": v for m, v in share.items()})
            rows.append(row)
    return rows
