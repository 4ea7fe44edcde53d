"""Tables and the written report of the ``sites`` demo (Markdown in the terminal; Markdown, HTML and CSV files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ...calibrate import GroupCalibrator
from ...calibrate.explain import FeatureBank, drivers, explain_table
from ...calibrate.pvalues import conformal_pvalues
from ...detectors import get_detector
from ..html import HtmlReport
from . import _sites_eval
from ._sites_eval import DETECTOR_PARAMS, METHODS, SITES, TRAIN_SITES, Prepared


def _pm(mean: float, se: float) -> str:
    return f"{100 * mean:.1f} ± {100 * se:.1f}"


def site_table(summary: pd.DataFrame, weights: pd.DataFrame, detector: str, accuracy: dict[str, float]
               ) -> pd.DataFrame:
    """Per site: false-alarm and detection rate (%, mean ± SE over repetitions) of each calibration method."""
    s = summary[summary.detector == detector].set_index(["site", "method"])
    w = weights.groupby("site")[["ess", "n_cal", "domain_auroc"]].mean()
    rows = []
    for site in SITES:
        row: dict[str, Any] = {"site": f"{site} ({'training' if site in TRAIN_SITES else 'new'})",
                               "model acc.": f"{100 * accuracy[site]:.1f}"}
        for m in METHODS:
            row[f"FAR {m}"] = _pm(s.loc[(site, m), "far"], s.loc[(site, m), "far_se"])
        for m in METHODS:
            row[f"detect {m}"] = _pm(s.loc[(site, m), "detection"], s.loc[(site, m), "detection_se"])
        row["ESS / n"] = f"{w.loc[site, 'ess']:.0f} / {w.loc[site, 'n_cal']:.0f}"
        row["domain AUROC"] = f"{100 * w.loc[site, 'domain_auroc']:.1f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("site")


def detector_table(summary: pd.DataFrame, aurocs: pd.DataFrame) -> pd.DataFrame:
    """Per detector and site: AUROC (ID vs semantic OOD), FAR of the marginal and weighted degrees, and the
    weighted degree's detection rate (%)."""
    s = summary.set_index(["detector", "site", "method"])
    a = aurocs.set_index(["detector", "site"])["auroc"]
    rows = []
    for det in dict.fromkeys(summary.detector):
        cls = get_detector(det)
        # zero-shot detectors fitted without prompts take the classifier head's rows as their class prompts
        needs = "labels" if cls.needs_labels else "head" if cls.needs_head else \
            "head rows as prompts" if getattr(cls, "needs_prompts", False) else \
            "classifier logits" if "logits" in cls(**DETECTOR_PARAMS.get(det, {})).required_features() else \
            "features only"
        for site in SITES:
            rows.append({"detector": det, "needs": needs, "site": site, "AUROC": f"{100 * a[(det, site)]:.1f}",
                         "FAR marginal": _pm(s.loc[(det, site, "marginal"), "far"], s.loc[(det, site, "marginal"), "far_se"]),
                         "FAR weighted": _pm(s.loc[(det, site, "weighted"), "far"], s.loc[(det, site, "weighted"), "far_se"]),
                         "detect weighted": _pm(s.loc[(det, site, "weighted"), "detection"],
                                                s.loc[(det, site, "weighted"), "detection_se"])})
    return pd.DataFrame(rows).set_index("detector")


def example_readings(prep: Prepared, seed: int = 0) -> list[str]:
    """Plain-language readings of two site-C inputs (one ID digit, one unseen class): the degree calibrated per
    group (site C is unseen, so it is named and pooled), its nearest training images, and which detector drives it."""
    names = list(prep.scores)[:3]
    cal_groups = [s for s in TRAIN_SITES for _ in range(prep.feats[(s, "held")].n)]
    picks = [("C", "held", 0), ("C", "ood", 0)]
    member_p = {}
    result = None
    for k, name in enumerate(names):
        sc = prep.scores[name]
        cal = torch.cat([sc[(s, "held")] for s in TRAIN_SITES])
        test = torch.stack([sc[(s, split)][i] for s, split, i in picks])
        member_p[name] = conformal_pvalues(cal, test)
        if k == 0:
            result = GroupCalibrator(cal, cal_groups).pvalues(test, [s for s, _, _ in picks])
    bank_feats = torch.cat([prep.feats[(s, "train")]["features"] for s in TRAIN_SITES])
    ids = [f"{s}/train#{i}" for s in TRAIN_SITES for i in range(prep.feats[(s, "train")].n)]
    bank = FeatureBank(bank_feats, k=2, ids=ids)
    feats = torch.stack([prep.feats[(s, split)]["features"][i] for s, split, i in picks])
    quantile = [line.split(": ", 1)[1] for line in result.describe()]
    table = explain_table(result.pvalues, quantile, result.calibrated_in, bank, feats, drivers(member_p))
    labels = [f"site C, digit {int(prep.labels[(s, split)][i])} ({'ID' if split == 'held' else 'unseen class'})"
              for s, split, i in picks]
    return [f"{lab}: {r}" for lab, r in zip(labels, table["reading"])]


def build_report(prep: Prepared, summary: pd.DataFrame, weights: pd.DataFrame, aurocs: pd.DataFrame,
                 readings: list[str], settings: dict[str, Any]) -> HtmlReport:
    main = list(prep.scores)[0]
    rep = HtmlReport("sites: a calibrated OOD degree across sites and scanners",
                     subtitle=f"simulated multi-site study from scikit-learn digits, seed {settings['seed']}")
    rep.section("Study", (
        "Digits 0–5 are imaged at three sites through different acquisition models (contrast curve, blur, noise, "
        "resolution). A CNN is trained on sites A and B; site C is new: the monitor has only "
        f"{_sites_eval.NEW_SPLIT[0]} unlabelled images from it (and tests on {_sites_eval.NEW_SPLIT[1]} more). "
        "Semantic OOD = digits 6–9 imaged at every site. Calibration: ID images of A "
        f"and B held out from training ({settings['cal_per_site']} per site per repetition). "
        f"Rates at α = {settings['alpha']:g}, mean ± standard error over {settings['reps']} random "
        "calibration / unlabelled / test splits.\n\n"
        "- **marginal**: one conformal p-value against all calibration scores;\n"
        "- **Mondrian**: calibrated within the input's site; site C is unseen, so it falls back to the pooled "
        "calibration and is named as such (its rows equal the marginal ones);\n"
        "- **weighted**: weighted conformal p-values (Tibshirani et al. 2019), likelihood-ratio weights from a "
        "cross-fitted, clipped logistic domain classifier on the CNN's features vs that site's unlabelled images "
        "(ESS = effective calibration sample size; domain AUROC: how separable the site is from A ∪ B)."))
    rep.section(f"Per site: false alarms and detection ({main})",
                site_table(summary, weights, main, prep.accuracy))
    rep.text("FAR = share of ID test images flagged (target ≤ 5 %); detect = share of digits 6–9 flagged. "
             "Model acc. = the CNN's accuracy on the site's held-out ID images (its task quality).")
    rep.section("Label-free and other detectors", detector_table(summary, aurocs))
    rep.text("needs: what the detector uses besides the features — 'features only' runs label-free on any "
             "encoder's embeddings; 'classifier logits' needs a trained classifier but no labels at fit; 'head rows as "
             "prompts': a zero-shot detector (MCM, NegLabel) given the classifier's last-layer rows as its class "
             "prompts.")
    rep.section("Readings (interpretable degree)", "\n".join(f"- {r}" for r in readings))
    rep.settings(settings)
    return rep


def write(rep: HtmlReport, per_rep: pd.DataFrame, summary: pd.DataFrame, folder: str | Path) -> list[Path]:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = [rep.write(out / "sites.html", markdown=out / "sites.md"), out / "sites.md"]
    summary.to_csv(out / "sites_summary.csv", index=False)
    per_rep.to_csv(out / "sites_repetitions.csv", index=False)
    return paths + [out / "sites_summary.csv", out / "sites_repetitions.csv"]
