"""Data, training (cached) and scoring for ``oodlens demo training``.

Every method trains the digits CNN (:class:`~oodlens.bench.datasets.digits.DigitsCNN`, ID = digits 0–5) from the
same initialisation for a seed (``torch.manual_seed(seed)`` before building it), with the same budget and recipe:
20 epochs, batch 64, Adam 2e-3, weight decay 1e-4, cosine schedule, ±1-pixel shifts — the digits demo's recipe.
Outlier Exposure, energy fine-tuning and MixOE draw auxiliary outliers from 8×8 patches of scikit-learn's
``flower.jpg`` (a distribution that is never a test set). The data split is fixed (digits split seed 0); a seed
changes the initialisation, batch order, augmentation and outlier draws. Trained weights are cached as
safetensors under ``<cache>/training-v2``; scores come from registered detectors fitted on ID train features.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...detectors import create
from ...features import Features
from ...metrics import auroc, ood_accepted_at_id_kept
from ...training import (NPOS, VOS, AbeT, ClassifierConfig, CrossEntropy, EnergyFinetune, LogitNorm,
                         MixtureOutlierExposure, OutlierExposure, load_checkpoint, save_checkpoint, train_classifier)
from ...training.classifier import FeatureTap
from ..datasets.digits import DigitsCNN, photo_patches, load_digits_splits

CACHE_VERSION = "training-v2"
EPOCHS = 20
#: queue sizes scaled to digits (≈ 108 training images per class): the reference's ratios K/S = 0.1, select/S = 0.05
#: are kept; VOS starts at 40 % of the budget like the reference's epoch 40 of 100
METHOD_FACTORIES = {
    "ce": lambda: CrossEntropy(),
    "logitnorm": lambda: LogitNorm(),
    "oe": lambda: OutlierExposure(),
    "energy_ft": lambda: EnergyFinetune(m_in=-13.0, m_out=-6.0),  # MixOE reference's margins (see the notes)
    "moe": lambda: MixtureOutlierExposure(),
    "vos": lambda: VOS(sample_number=200, start_epoch=int(0.4 * EPOCHS)),
    "npos": lambda: NPOS(sample_number=200, k=20, select=10),
    "abet": lambda: AbeT(),
}
METHOD_TITLES = {"ce": "cross-entropy", "logitnorm": "LogitNorm", "oe": "Outlier Exposure", "energy_ft": "energy FT",
                 "moe": "MixOE", "vos": "VOS", "npos": "NPOS", "abet": "AbeT"}
#: post-hoc detectors scored on top of every trained network (registered detectors, default parameters)
POST_HOC = ("msp", "energy", "mahalanobis", "knn")
N_OUTLIER_POOL = 4000


def shift_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The digits recipe's augmentation: the whole batch rolled by dy, dx ∈ {−1, 0, 1}."""
    dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def load_data() -> dict[str, Any]:
    """Digits splits (seed 0) and the outlier pool (flower-photo patches, its own generator)."""
    splits = load_digits_splits(0)
    pool = photo_patches(1, N_OUTLIER_POOL, np.random.default_rng(2024))
    return {"splits": splits, "outliers": pool}


def config_key(method: str, seed: int) -> str:
    cfg = ClassifierConfig(epochs=EPOCHS, seed=seed)
    blob = json.dumps({"cfg": vars(cfg), "method": METHOD_FACTORIES[method]().params(), "v": CACHE_VERSION},
                      sort_keys=True)
    return f"{method}-seed{seed}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def trained_model(method: str, seed: int, data: dict[str, Any], cache: Path, progress: bool) -> tuple[torch.nn.Module, dict]:
    """The network trained by ``method`` for ``seed``, from the cache when there (else trained and cached)."""
    m = METHOD_FACTORIES[method]()
    path = cache / f"{config_key(method, seed)}.safetensors"
    torch.manual_seed(seed)
    model = DigitsCNN()
    if path.is_file():
        m.setup(model, "fc", 6, 64)  # same architecture as trained (AbeT's head)
        meta = load_checkpoint(model, path)
        return model.eval(), {**meta, "cached": True, "seconds": 0.0}
    s = data["splits"]
    start = time.perf_counter()
    res = train_classifier(model, s.inputs["train"], s.labels["train"], s.inputs["val"], s.labels["val"], m,
                           ClassifierConfig(epochs=EPOCHS, seed=seed), head="fc", outliers=data["outliers"],
                           augment=shift_augment, progress=progress)
    seconds = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    meta = {"best_val_acc": res.best_val_acc, "best_epoch": res.best_epoch, "method": res.method, "config": res.config}
    save_checkpoint(model, path, meta)
    return model.eval(), {**meta, "cached": False, "seconds": seconds}


@torch.no_grad()
def features_of(model: torch.nn.Module, x: torch.Tensor) -> Features:
    model.eval()
    feats, logits = FeatureTap(model, "fc")(x)
    return Features({"features": feats, "logits": logits})


def evaluate(model: torch.nn.Module, method: str, data: dict[str, Any], post_hoc: tuple[str, ...]) -> list[dict]:
    """Rows (score, kind, metric values) for the method's own score and each post-hoc detector."""
    s = data["splits"]
    feats = {name: features_of(model, x) for name, x in s.inputs.items() if name not in ("val", "val_ood")}
    acc = float((feats["test"]["logits"].argmax(1) == s.labels["test"]).float().mean())
    own_name, own_params = METHOD_FACTORIES[method]().score
    scorers = [("own: " + own_name, own_name, own_params)] + [(d, d, {}) for d in post_hoc]
    rows = []
    for label, name, params in scorers:
        det = create(name, **params).fit(feats["train"], labels=s.labels["train"])
        id_scores = det.score(feats["test"]).numpy()
        per_kind: dict[str, list[tuple[float, float]]] = {}
        for set_name, kind in s.kinds.items():
            ood = det.score(feats[set_name]).numpy()
            per_kind.setdefault(kind, []).append((auroc(id_scores, ood), ood_accepted_at_id_kept(id_scores, ood)))
        row = {"score": label, "id_acc": acc}
        for kind, vals in per_kind.items():
            row[f"{kind}_auroc"] = float(np.mean([v[0] for v in vals]))
            row[f"{kind}_fpr95"] = float(np.mean([v[1] for v in vals]))
        rows.append(row)
    return rows


@torch.no_grad()
def abet_diagnostic(model: torch.nn.Module, data: dict[str, Any]) -> dict[str, float]:
    """AUROC (ID test vs each OOD kind) of AbeT's two parts alone: the learned temperature T(x) (higher = OOD) and
    the cosine numerator −max_i h_i(x); shows which part carries (or spoils) the AbeT score on this problem."""
    s = data["splits"]
    parts = {}
    for name in ["test", *s.kinds]:
        z, _ = FeatureTap(model.eval(), "fc")(s.inputs[name])
        h, t = model.fc.parts(z)
        parts[name] = (t[:, 0].numpy(), (-h.max(dim=1).values).numpy())
    out: dict[str, list[float]] = {}
    for name, kind in s.kinds.items():
        for i, part in enumerate(("T", "cos")):
            out.setdefault(f"{kind} {part}", []).append(auroc(parts["test"][i], parts[name][i]))
    return {k: float(np.mean(v)) for k, v in out.items()}
