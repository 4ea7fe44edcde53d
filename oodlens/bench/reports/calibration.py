"""Calibration, failure and severity report sections from score arrays (higher score = more OOD).

Entry points (numpy in, plain dicts / printable lines out):

* :func:`calibration_summary` — conformal p-values of ID test and OOD scores against ID calibration scores:
  realised false-alarm rate of ``p ≤ fa_level`` (marginal, Simes, DKW), the conformal threshold for
  ``1 − fa_level`` acceptance and its realised acceptance on ID test, detection rate per OOD set, and
  Benjamini–Hochberg (and Storey-BH) at FDR ``alpha`` on one mixed batch (ID test + every OOD set): realised FDR,
  power, number flagged. :func:`format_calibration_summary` prints it.
* :func:`failure_summary` — AURC, E-AURC, AUGRC, misclassification AUROC (:mod:`oodlens.metrics.failure`).
* :func:`severity_summary` — Spearman ρ between severity and score, AUROC per severity level vs ID
  (:mod:`oodlens.metrics.severity`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ...calibrate import (ConformalCalibrator, acceptance_rate, conformal_threshold, false_discovery_proportion,
                          screen)
from ...errors import OODLensError
from ...metrics.failure import failure_metrics, misclassification_auroc
from ...metrics.ood import _as_scores
from ...metrics.severity import auroc_by_severity, severity_spearman


def _np(x: Any, name: str) -> np.ndarray:
    return _as_scores(x, name).astype(np.float64)


def calibration_summary(cal_scores: Any, id_test_scores: Any, ood_scores: Mapping[str, Any], fa_level: float = 0.05,
                        alpha: float = 0.1, seed: int = 0, delta: float = 0.1,
                        ood_fraction: float | None = None) -> dict[str, Any]:
    """Calibration figures (see the module docstring). ``cal_scores``: ID data held out from fitting and from the
    ID test set. ``ood_fraction``: if set, OOD sets are subsampled (with ``seed``, proportionally to their sizes)
    so that OOD makes up this fraction of the mixed batch; by default every score is used."""
    cal = _np(cal_scores, "cal_scores")
    idt = _np(id_test_scores, "id_test_scores")
    if cal.shape == idt.shape and np.array_equal(cal, idt):
        raise OODLensError("calibration and ID test scores are identical: calibrate on a separate ID split")
    if not isinstance(ood_scores, Mapping) or not ood_scores:
        raise OODLensError("ood_scores must be a non-empty dict {test set name: scores}")
    ood = {str(k): _np(v, f"ood_scores[{k!r}]") for k, v in ood_scores.items()}
    calib = ConformalCalibrator(cal, "marginal", delta)
    calib.check_level(fa_level)
    p_id = calib.pvalues(idt)
    p_ood = {k: calib.pvalues(v) for k, v in ood.items()}

    def fa(method: str) -> float:
        return float((calib.pvalues(idt, method) <= fa_level + 1e-12).double().mean())

    tau = conformal_threshold(cal, 1.0 - fa_level, "marginal")
    out: dict[str, Any] = {
        "n_calibration": calib.n, "n_id_test": int(idt.size), "fa_level": float(fa_level), "alpha": float(alpha),
        "delta": float(delta),
        "false_alarm_rate": {m: fa(m) for m in ("marginal", "simes", "dkw")},
        "min_pvalue": {m: float(ConformalCalibrator(cal, m, delta).min_pvalue) for m in ("marginal", "simes", "dkw")},
        "threshold": {"value": tau.value, "k": tau.k, "acceptance": tau.acceptance, "statement": tau.statement},
        "acceptance_rate": acceptance_rate(tau, idt),
        "detection_rate": {k: float((p <= fa_level + 1e-12).double().mean()) for k, p in p_ood.items()},
        "median_degree": {"id_test": float(1 - p_id.median()), **{k: float(1 - p.median()) for k, p in p_ood.items()}},
    }
    # one mixed batch: ID test + OOD sets (optionally subsampled to ood_fraction)
    parts_p, parts_set = [p_id], [np.full(idt.size, "")]
    g = np.random.default_rng(seed)
    total_ood = sum(v.size for v in ood.values())
    keep = total_ood
    if ood_fraction is not None:
        if not 0.0 < ood_fraction < 1.0:
            raise OODLensError(f"ood_fraction must be in (0, 1), got {ood_fraction}")
        keep = min(total_ood, int(round(ood_fraction * idt.size / (1.0 - ood_fraction))))
    for k, p in p_ood.items():
        take = p.numel() if keep == total_ood else int(round(keep * p.numel() / total_ood))
        idx = np.sort(g.permutation(p.numel())[:take])
        parts_p.append(p[torch.from_numpy(idx)])
        parts_set.append(np.full(take, k))
    pm = torch.cat(parts_p)
    set_of = np.concatenate(parts_set)
    is_ood = set_of != ""
    out["batch"] = {"n": int(pm.numel()), "n_ood": int(is_ood.sum()), "n_id": int((~is_ood).sum())}
    for method in ("bh", "storey"):
        res = screen(pm, alpha, method)
        rej = res.rejected.cpu().numpy()
        out[method] = {
            "n_flagged": int(rej.sum()),
            "fdr": float(false_discovery_proportion(res.rejected, torch.from_numpy(is_ood))),
            "power": float(rej[is_ood].mean()) if is_ood.any() else float("nan"),
            "p_cutoff": float(res.cutoff), "pi0": float(res.pi0),
            "power_by_set": {k: float(rej[set_of == k].mean()) for k in ood if (set_of == k).any()},
        }
    return out


def format_calibration_summary(summary: Mapping[str, Any]) -> list[str]:
    """Printable lines for a :func:`calibration_summary` result."""
    s = summary
    fa = s["false_alarm_rate"]
    lines = [
        f"Calibration: n = {s['n_calibration']} held-out ID scores; ID test n = {s['n_id_test']}",
        f"False alarms on ID test at p ≤ {s['fa_level']:g}: marginal {100 * fa['marginal']:.2f} %, "
        f"Simes {100 * fa['simes']:.2f} %, DKW {100 * fa['dkw']:.2f} % (target ≤ {100 * s['fa_level']:g} %; "
        f"Simes/DKW hold it with prob. ≥ {100 * (1 - s['delta']):g} % over the calibration draw)",
        f"Threshold keeping {100 * s['threshold']['acceptance']:g} % of ID: score ≤ {s['threshold']['value']:.4g} "
        f"(k = {s['threshold']['k']}); realised ID acceptance {100 * s['acceptance_rate']:.2f} %",
        "Detection at p ≤ {:g}: ".format(s["fa_level"])
        + ", ".join(f"{k} {100 * v:.1f} %" for k, v in s["detection_rate"].items()),
    ]
    b = s["batch"]
    for method, label in (("bh", "Benjamini–Hochberg"), ("storey", "Storey-BH")):
        r = s[method]
        lines.append(f"{label} at FDR {s['alpha']:g} on a mixed batch of {b['n']} ({b['n_ood']} OOD): "
                     f"{r['n_flagged']} flagged, realised FDR {100 * r['fdr']:.2f} %, power {100 * r['power']:.1f} %")
    return lines


def failure_summary(scores: Any, correct: Any, is_ood: Any = None, kind: str = "score") -> dict[str, Any]:
    """AURC, E-AURC, AUGRC (failures = misclassified, plus OOD inputs when ``is_ood`` is given) and the
    misclassification AUROC on ID inputs; with ``is_ood`` also ``failure_auroc_with_ood`` (positive =
    misclassified ∪ OOD). ``kind="score"``: higher = more OOD / less trusted; ``"confidence"``: the opposite."""
    out: dict[str, Any] = dict(failure_metrics(scores, correct, is_ood, kind))
    out.pop("misclassification_auroc")
    s = _np(scores, "scores")
    c = np.asarray(correct.detach().cpu() if hasattr(correct, "detach") else correct).astype(bool).reshape(-1)
    if c.shape != s.shape:
        raise OODLensError(f"correct has {c.size} entries for {s.size} scores")
    id_mask = np.ones(s.size, dtype=bool)
    if is_ood is not None:
        o = np.asarray(is_ood.detach().cpu() if hasattr(is_ood, "detach") else is_ood).astype(bool).reshape(-1)
        id_mask = ~o
        fail = ~c | o
        out["failure_auroc_with_ood"] = (misclassification_auroc(s, ~fail, kind=kind)
                                         if 0 < fail.sum() < fail.size else None)
    ci = c[id_mask]
    out["misclassification_auroc"] = (misclassification_auroc(s[id_mask], ci, kind=kind)
                                      if 0 < ci.sum() < ci.size else None)
    out["n"] = int(s.size)
    return out


def severity_summary(id_scores: Any, scores_by_severity: Mapping[int, Any]) -> dict[str, Any]:
    """Spearman ρ of score vs severity (ID at level 0, and among shifted levels only when there are ≥ 2),
    AUROC per level vs ID, mean score per level, and whether AUROC never decreases with severity."""
    aurocs = auroc_by_severity(id_scores, scores_by_severity)
    values = list(aurocs.values())
    out: dict[str, Any] = {
        "spearman": severity_spearman(scores_by_severity, id_scores=id_scores),
        "spearman_shifted_only": (severity_spearman(scores_by_severity) if len(scores_by_severity) >= 2 else None),
        "auroc_by_severity": aurocs,
        "mean_score_by_severity": {0: float(_np(id_scores, "id_scores").mean()),
                                   **{k: float(_np(scores_by_severity[k], f"severity {k}").mean()) for k in aurocs}},
        "auroc_monotone": bool(all(b >= a for a, b in zip(values, values[1:]))),
    }
    return out


def format_failure_summary(summary: Mapping[str, Any]) -> list[str]:
    s = summary
    auc = s.get("misclassification_auroc")
    line = (f"AURC {s['aurc']:.4f}, E-AURC {s['e_aurc']:.4f}, AUGRC {s['augrc']:.4f} "
            f"(failure rate {100 * s['failure_rate']:.1f} %, n = {s['n']}); misclassification AUROC "
            + ("n/a" if auc is None else f"{auc:.4f}"))
    if "failure_auroc_with_ood" in s:
        f = s["failure_auroc_with_ood"]
        line += "; failure (misclassified ∪ OOD) AUROC " + ("n/a" if f is None else f"{f:.4f}")
    return [line]


def format_severity_summary(summary: Mapping[str, Any]) -> list[str]:
    s = summary
    per = ", ".join(f"{k}: {v:.3f}" for k, v in s["auroc_by_severity"].items())
    return [f"Spearman ρ(severity, score) = {s['spearman']:.3f} (ID as level 0)"
            + ("" if s["spearman_shifted_only"] is None else f", {s['spearman_shifted_only']:.3f} among shifted levels"),
            f"AUROC vs ID by severity: {per}" + ("" if s["auroc_monotone"] else " (not monotone)")]


__all__ = ["calibration_summary", "failure_summary", "format_calibration_summary", "format_failure_summary",
           "format_severity_summary", "severity_summary"]
