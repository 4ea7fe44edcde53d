"""The ``sites`` demo's computation: train a CNN on sites A and B, extract its features once, fit the detectors,
then repeat random calibration / unlabelled / test splits of the held-out patients and record, per site, detector
and calibration method, the false-alarm rate on ID test inputs and the detection rate of semantic OOD at α."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...calibrate import ConformalCalibrator, DomainWeights, GroupCalibrator, WeightedCalibrator
from ...detectors import Detector, Head, create
from ...extract import extract
from ...features import Features
from ...metrics import auroc
from ..datasets.digits import train_digits_cnn
from ..datasets.sites import load_sites_study, model_input

TRAIN_SITES = ("A", "B")
SITES = ("A", "B", "C")
METHODS = ("marginal", "mondrian", "weighted")
#: held-out patients per known site and repetition: calibration, unlabelled pool, test
KNOWN_SPLIT = (60, 60, 60)
#: site C: unlabelled pool, test
NEW_SPLIT = (180, 100)
DEFAULT_DETECTORS = ("knn", "ssd", "mahalanobis_one_class", "mahalanobis", "energy")
DETECTOR_PARAMS: dict[str, dict[str, Any]] = {"ssd": {"clusters": 6}, "knn": {"k": 10}}


@dataclass
class Prepared:
    feats: dict[tuple[str, str], Features]
    labels: dict[tuple[str, str], torch.Tensor]
    detectors: dict[str, Detector]
    scores: dict[str, dict[tuple[str, str], torch.Tensor]]
    accuracy: dict[str, float]
    train_seconds: float
    skipped: dict[str, str] = field(default_factory=dict)


def prepare(seed: int = 0, detectors: tuple[str, ...] = DEFAULT_DETECTORS, epochs: int = 20,
            progress: bool = False) -> Prepared:
    """Render the study, train the CNN on A + B (ID classes), extract ``features``/``logits``, fit and score."""
    start = time.perf_counter()
    study = load_sites_study(seed)
    x = model_input(torch.cat([study.images[(s, "train")] for s in TRAIN_SITES]))
    y = torch.cat([study.labels[(s, "train")] for s in TRAIN_SITES])
    model = train_digits_cnn(x, y, seed=seed, epochs=epochs, progress=progress)
    feats = {key: extract(model, model_input(imgs), layers={"pool": "features"}, progress=False)[0]
             for key, imgs in study.images.items()}
    train = Features({k: torch.cat([feats[(s, "train")][k] for s in TRAIN_SITES]) for k in ("features", "logits")})
    accuracy = {s: float((feats[(s, "held")]["logits"].argmax(1) == study.labels[(s, "held")]).float().mean())
                for s in SITES}
    fitted, scores, skipped = {}, {}, {}
    for name in detectors:
        det = create(name, **DETECTOR_PARAMS.get(name, {}))
        try:
            det.fit(train, y, head=Head.coerce(model.fc))
            scores[name] = {key: det.score(f).double() for key, f in feats.items() if key[1] != "train"}
        except Exception as e:  # noqa: BLE001  (reported in the demo's output, never silent)
            skipped[name] = f"{type(e).__name__}: {e}"
            continue
        fitted[name] = det
    return Prepared(feats, study.labels, fitted, scores, accuracy, time.perf_counter() - start, skipped)


def _rate(p: torch.Tensor, alpha: float) -> float:
    return float((p <= alpha).double().mean())


def evaluate(prep: Prepared, reps: int = 20, alpha: float = 0.05, seed: int = 0, folds: int = 3,
             clip: float = 0.01, c: float = 1.0, components: int | None = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per repetition: (site, detector, method, far, detection) rows, and (site, ess, domain_auroc) rows."""
    rng = np.random.default_rng(seed)
    rows, weights_rows = [], []
    feats = {k: v["features"] for k, v in prep.feats.items()}
    for r in range(reps):
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for s in SITES:
            n_held = feats[(s, "held")].shape[0]
            perm = torch.from_numpy(rng.permutation(n_held))
            if s in TRAIN_SITES:
                a, b, c = KNOWN_SPLIT
                parts[s] = {"cal": perm[:a], "unlabelled": perm[a:a + b], "test": perm[a + b:a + b + c]}
            else:
                a, b = NEW_SPLIT
                parts[s] = {"unlabelled": perm[:a], "test": perm[a:a + b]}
        cal_feats = torch.cat([feats[(s, "held")][parts[s]["cal"]] for s in TRAIN_SITES])
        cal_groups = [s for s in TRAIN_SITES for _ in range(len(parts[s]["cal"]))]
        for s in SITES:
            unl = feats[(s, "held")][parts[s]["unlabelled"]]
            test_f = torch.cat([feats[(s, "held")][parts[s]["test"]], feats[(s, "ood")]])
            n_id = len(parts[s]["test"])
            domain = DomainWeights(folds, clip, c, seed=r, components=components).fit(cal_feats, unl)
            test_w = domain.weights(test_f)
            weights_rows.append({"rep": r, "site": s, "ess": domain.ess_, "n_cal": domain.n_source_,
                                 "domain_auroc": domain.domain_auroc_})
            for name, sc in prep.scores.items():
                cal = torch.cat([sc[(t, "held")][parts[t]["cal"]] for t in TRAIN_SITES])
                test = torch.cat([sc[(s, "held")][parts[s]["test"]], sc[(s, "ood")]])
                wc = WeightedCalibrator(cal, site=f"site {s}", domain=domain)
                p = {"marginal": ConformalCalibrator(cal).pvalues(test),
                     "mondrian": GroupCalibrator(cal, cal_groups, min_size=40).pvalues(test, s).pvalues,
                     "weighted": wc.pvalues(test, weights=test_w)}
                for method, pv in p.items():
                    rows.append({"rep": r, "site": s, "detector": name, "method": method,
                                 "far": _rate(pv[:n_id], alpha), "detection": _rate(pv[n_id:], alpha)})
    return pd.DataFrame(rows), pd.DataFrame(weights_rows)


def aurocs(prep: Prepared) -> pd.DataFrame:
    """AUROC of ID held-out vs semantic OOD per site and detector (all held-out patients)."""
    return pd.DataFrame([{"site": s, "detector": name, "auroc": auroc(sc[(s, "held")], sc[(s, "ood")])}
                         for name, sc in prep.scores.items() for s in SITES])


def summarise(per_rep: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error over repetitions per (site, detector, method)."""
    g = per_rep.groupby(["site", "detector", "method"], sort=False)
    out = g[["far", "detection"]].mean()
    se = g[["far", "detection"]].std(ddof=1) / np.sqrt(g.size().to_numpy())[:, None]
    out["far_se"], out["detection_se"] = se["far"], se["detection"]
    return out.reset_index()
