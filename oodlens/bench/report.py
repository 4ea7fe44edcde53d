"""Reports of a :class:`~oodlens.bench.runner.BenchmarkResult`: Markdown (printed in the terminal), one
self-contained HTML file with figures, and the tidy CSV — built from one description, so both files hold the same
sections and tables.

Every table uses one format (values ×100, one decimal); detectors are ranked by a chosen metric (mean over the
near- and far-OOD sets) with the best value of each column marked; a mean column appears only where there is
more than one set to average; AUROCs below chance are flagged and read out in words; the FPR convention and the
run's settings (seed, tuned parameters, versions) are stated.

>>> paths = write_reports(result, "out", settings={"seed": 0}, calibration=True)   # report.md/.html, results.csv
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .html import HtmlReport
from .calibration_table import calibration_table
from .reports.tables import markdown_table as _markdown_table
from .runner import BenchmarkResult

#: how each metric is titled in tables: the FPR convention is spelled out
METRIC_TITLES = {
    "auroc": "AUROC ↑",
    "aupr_in": "AUPR-in ↑",
    "aupr_out": "AUPR-out ↑",
    "ood_accepted_at_95_id": "FPR95 ↓ (OOD accepted while 95% ID kept)",
    "id_rejected_at_95_ood": "FPR95-OpenOOD ↓ (ID rejected while 95% OOD caught)",
    "detection_acc": "Detection accuracy ↑",
    "flagged_at_95_id": "Flagged at the 95%-ID threshold",
}
#: metrics where a lower value is better (everything else: higher is better)
LOWER_IS_BETTER = frozenset({"ood_accepted_at_95_id", "id_rejected_at_95_ood"})
FPR_CONVENTION = ("FPR95 = share of OOD inputs accepted at the threshold that keeps 95 % of ID test (the MSP / ODIN "
                  "/ Energy papers' FPR95; OpenOOD's FPR@95 — ID rejected while 95 % of OOD is caught — is "
                  "`id_rejected_at_95_ood` in results.csv).")
BELOW_CHANCE = ("AUROC below 50 means the score is *higher* on ID test than on that set: the detector ranks these "
                "inputs as more in-distribution than real ID data. This is the score's behaviour on this kind of "
                "shift (inverted for it), not a bug in the table; for such inputs combine the score with another "
                "(e.g. `fused`) or pick a detector that stays above chance.")


def _sets(result: BenchmarkResult, kinds: Sequence[str]) -> list[str]:
    wide_cols = set(result.table.test_set)
    return [t.name for t in result.test_sets if t.kind in kinds and t.name in wide_cols]


def summary(result: BenchmarkResult, metric: str, kinds: Sequence[str] = ("near", "far"),
            overall: bool = False) -> pd.DataFrame:
    """detector × (test sets of ``kinds``, plus a ``"<kind> mean"`` column where a kind has more than one set);
    ``overall``: a last ``"mean"`` column over every set of ``kinds`` (the ranking value) when there are two or
    more."""
    wide = result.metric(metric)
    cols: dict[str, pd.Series] = {}
    for kind in kinds:
        names = [n for n in _sets(result, (kind,)) if n in wide.columns]
        for n in names:
            cols[n] = wide[n]
        if len(names) > 1:
            cols[f"{kind} mean"] = wide[names].mean(axis=1)
    every = [n for n in _sets(result, kinds) if n in wide.columns]
    if overall and len(every) > 1:
        cols["mean"] = wide[every].mean(axis=1)
    return pd.DataFrame(cols, index=wide.index)


def ranking(result: BenchmarkResult, rank_by: str = "auroc", kinds: Sequence[str] = ("near", "far")) -> pd.Series:
    """Each detector's mean ``rank_by`` over the test sets of ``kinds``, best first (FPR-type metrics: lowest)."""
    wide = result.metric(rank_by)
    names = [n for n in _sets(result, kinds) if n in wide.columns] or list(wide.columns)
    mean = wide[names].mean(axis=1)
    return mean.sort_values(ascending=rank_by in LOWER_IS_BETTER, kind="stable")


def below_chance(result: BenchmarkResult, kinds: Sequence[str] = ("near", "far"),
                 chance: float = 0.5) -> dict[str, dict[str, float]]:
    """{test set: {detector: AUROC}} for every AUROC below ``chance`` on the sets of ``kinds``."""
    wide = result.metric("auroc")
    out: dict[str, dict[str, float]] = {}
    for name in _sets(result, kinds):
        if name in wide.columns:
            low = wide[name][wide[name] < chance].sort_values()
            if len(low):
                out[name] = {d: float(v) for d, v in low.items()}
    return out


def below_chance_text(result: BenchmarkResult, kinds: Sequence[str] = ("near", "far")) -> str | None:
    """The reading of below-chance rows in words (None when there are none)."""
    low = below_chance(result, kinds)
    if not low:
        return None
    n = len(result.detectors)
    lines = [f"- **{s}**: {len(d)} of {n} detectors below chance — "
             + ", ".join(f"{k} {100 * v:.1f}" for k, v in list(d.items())[:8]) + (", …" if len(d) > 8 else "")
             for s, d in low.items()]
    return "Below chance (AUROC < 50, marked † / shaded):\n\n" + "\n".join(lines) + "\n\n" + BELOW_CHANCE


def _tuned_keys(label: str) -> list[str]:
    from ..detectors import get_detector

    try:
        return list(get_detector(label.split("#")[0]).param_grid)
    except Exception:  # a detector instance that is not registered
        return []


def settings_table(result: BenchmarkResult) -> pd.DataFrame:
    """Per detector: whether it was tuned, the chosen values of its tuned parameters, and its run time."""
    rows = []
    for d in result.detectors:
        keys = _tuned_keys(d) if result.tuned.get(d) else []
        chosen = ", ".join(f"{k}={result.params[d].get(k)}" for k in keys if k in result.params[d])
        rows.append({"tuned on validation": "yes" if result.tuned.get(d) else "no (defaults)",
                     "chosen parameters": chosen or "–", "time (s)": float(result.seconds.get(d, float("nan")))})
    return pd.DataFrame(rows, index=result.detectors)


def run_settings(result: BenchmarkResult, settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The run's settings: caller's (seed, cache, ...) first, then protocol and library versions."""
    import torch

    from .. import __version__

    out = {str(k): str(v) for k, v in (settings or {}).items()}
    out.setdefault("covariate mode", {"separate": "separate (each shifted set scored as if OOD)",
                                      "accept": "accept (full-spectrum: shifted ID counts as ID)"}
                   .get(result.covariate_mode, result.covariate_mode))
    n_tuned = sum(bool(v) for v in result.tuned.values())
    out.setdefault("tuning", f"{n_tuned} of {len(result.detectors)} detectors tuned on ID validation vs validation "
                   "OOD (by AUROC); test sets scored once")
    out["versions"] = (f"oodlens {__version__}, torch {torch.__version__}, numpy {np.__version__}, pandas "
                       f"{pd.__version__}, Python {platform.python_version()} ({platform.system()})")
    return out


def _plot_detectors(order: Sequence[str], plot_detectors: Sequence[str] | None, n: int = 3) -> list[str]:
    if plot_detectors is not None:
        return [d for d in plot_detectors if d in order]
    chosen = list(order[:n])
    if "msp" in order and "msp" not in chosen:
        chosen.append("msp")  # the baseline, for reference
    return chosen


def _id_scores(result: BenchmarkResult, det: str) -> np.ndarray:
    """ID side of the near/far rows: ID test (∪ covariate sets in full-spectrum mode), as the table uses."""
    s = result.scores[det]
    cov = _sets(result, ("covariate",))
    if result.covariate_mode == "accept" and cov:
        return np.concatenate([s["test"], *[s[c] for c in cov]])
    return s["test"]


def headline(result: BenchmarkResult, rank_by: str = "auroc") -> str | None:
    """One sentence: the best detector by mean ``rank_by`` and by mean FPR95 over the near- and far-OOD sets."""
    if not result.detectors or not _sets(result, ("near", "far")):
        return None
    parts = []
    for metric in dict.fromkeys([rank_by, "ood_accepted_at_95_id"]):
        if metric in set(result.table.metric):
            r = ranking(result, metric)
            if len(r) and np.isfinite(r.iloc[0]):
                name = METRIC_TITLES.get(metric, metric).split(" ")[0]
                parts.append(f"best mean {name}: **{r.index[0]}** ({100 * r.iloc[0]:.1f})")
    return ("Over the near- and far-OOD sets, " + "; ".join(parts) + ".") if parts else None


def _overview(rep: HtmlReport, result: BenchmarkResult, rank_by: str) -> None:
    acc = f"ID test accuracy: {100 * result.id_accuracy:.1f}%. " if result.id_accuracy is not None else ""
    tuned = ("Hyper-parameters tuned on validation data only (no validation OOD given: defaults)."
             if any("no validation OOD" in n for n in result.notes) else "Hyper-parameters tuned on validation data only.")
    rep.section("Overview")
    top = headline(result, rank_by)
    if top:
        rep.text(top)
    rep.text(f"{acc}Scores: higher = more OOD. All values ×100, one decimal. {tuned} Detectors ranked by mean "
             f"{METRIC_TITLES.get(rank_by, rank_by).split(' ')[0]} over the near- and far-OOD sets, best first; the "
             f"best value of each column in **bold**. {FPR_CONVENTION}")
    first = next(iter(result.scores.values()), None)
    rows = [{"kind": "ID", "shift": "–", "severity": "–", "n": len(first["test"]) if first else "–",
             "classifier accuracy": result.id_accuracy if result.id_accuracy is not None else float("nan")}]
    rows += [{"kind": t.kind, "shift": t.group or "–", "severity": t.severity if t.severity is not None else "–",
              "n": len(first[t.name]) if first else "–",
              "classifier accuracy": result.set_accuracy.get(t.name, float("nan"))} for t in result.test_sets]
    sets = pd.DataFrame(rows, index=["ID test", *(t.name for t in result.test_sets)])
    rep.table(sets, caption="Test sets (classifier accuracy where the set has labels)", index_name="test set",
              percent=True)


def _main_tables(rep: HtmlReport, result: BenchmarkResult, metrics: Sequence[str], order: list[str]) -> None:
    rep.section("Main results")
    if not result.detectors:
        rep.callout("No detector ran on this benchmark: the reasons are listed under Run settings.")
        return
    low = below_chance(result)
    for metric in metrics:
        table = summary(result, metric, overall=True).reindex(order)
        best = "min" if metric in LOWER_IS_BETTER else "max"
        flags = [(d, s) for s, dets in low.items() for d in dets] if metric == "auroc" else []
        rep.table(table, caption=METRIC_TITLES.get(metric, metric), best=best, percent=True, flag_cells=flags,
                  index_name="detector")
        if metric == "auroc":
            reading = below_chance_text(result)
            if reading:
                rep.callout(reading)


def _score_figures(rep: HtmlReport, result: BenchmarkResult, order: list[str], chosen: list[str]) -> None:
    from ..plots import roc_curves, score_histograms

    sets = _sets(result, ("near", "far"))
    if not sets or not chosen:
        return
    rep.section("ROC curves and score histograms")
    rep.text(f"Detectors shown: {', '.join(chosen)} (the top of the ranking"
             + (" and the MSP baseline)." if "msp" in chosen and order.index("msp") >= 3 else ")."), note=True)
    figs = [roc_curves({d: _id_scores(result, d) for d in chosen}, {d: result.scores[d][s] for d in chosen},
                       title=f"ID test vs {s}") for s in sets]
    rep.figures(figs, [f"ROC, OOD = {s}; the dashed line marks 95 % of OOD caught" for s in sets])
    for d in chosen[:2] + (["msp"] if "msp" in chosen[2:] else []):
        rep.figure(score_histograms(_id_scores(result, d), {s: result.scores[d][s] for s in sets},
                                    title=f"{d}: score distributions"),
                   caption=f"{d}: ID test (grey) against each OOD set; overlap = inputs the score cannot separate")


def _covariate(rep: HtmlReport, result: BenchmarkResult, order: list[str], chosen: list[str],
               figures: bool) -> None:
    cov = [t for t in result.test_sets if t.kind == "covariate"]
    if not cov:
        return
    metric = "auroc" if result.covariate_mode == "separate" else "flagged_at_95_id"
    wide = result.metric(metric).reindex(order)
    rep.section("Covariate shift")
    rep.text("AUROC of ID test against each covariate-shifted set (the shift scored as if it were OOD: higher = the "
             "detector notices the shift more); columns: the shift, then its severity." if metric == "auroc" else
             "Share of covariate-shifted ID flagged at the threshold keeping 95 % of ID test (full-spectrum: shifted "
             "ID should be accepted, so lower is better).")
    groups: dict[str, list] = {}
    for t in cov:
        groups.setdefault(t.group or "shift", []).append(t)
    best = "max" if metric == "auroc" else "min"
    if all(t.severity is not None for t in cov):  # one table: a column group per shift, one column per severity
        table = wide[[t.name for ts in groups.values() for t in ts]]
        table.columns = pd.MultiIndex.from_tuples([(g, str(t.severity)) for g, ts in groups.items() for t in ts])
        flags = [(d, c) for c in table.columns for d in table.index if metric == "auroc" and table.loc[d, c] < 0.5]
        what = "AUROC" if metric == "auroc" else "flagged"
        rep.table(table, caption=f"{what}, shift × severity", percent=True, flag_cells=flags, best=best,
                  index_name="detector")
    else:
        for group, ts in groups.items():
            table = wide[[t.name for t in ts]]
            flags = [(d, c) for c in table.columns for d in table.index if metric == "auroc" and table.loc[d, c] < 0.5]
            rep.table(table, caption=f"{group}", percent=True, flag_cells=flags, best=best, index_name="detector")
    if result.set_accuracy:
        if all(t.severity is not None for t in cov):  # shift × severity
            acc = pd.DataFrame({f"severity {t.severity}": {g: np.nan for g in groups} for t in cov})
            for g, ts in groups.items():
                for t in ts:
                    acc.loc[g, f"severity {t.severity}"] = result.set_accuracy.get(t.name, np.nan)
            acc = acc[sorted(acc.columns, key=lambda c: int(c.split()[1]))]
        else:
            acc = pd.DataFrame({t.name: result.set_accuracy.get(t.name, np.nan) for t in cov}, index=["accuracy"])
        rep.table(acc, caption="Classifier accuracy under each shift", percent=True, index_name="shift")
    if figures and any(t.severity is not None for t in cov):
        from ..plots import auroc_vs_severity

        data = {g: {d: {int(t.severity): 100 * float(wide.loc[d, t.name]) for t in ts if t.severity is not None}
                    for d in chosen} for g, ts in groups.items()}
        if metric == "auroc":
            rep.figure(auroc_vs_severity(data), caption="AUROC against shift severity, per shift (dotted: chance)")
        else:
            rep.figure(auroc_vs_severity(data, ylabel="shifted ID flagged (%)", chance=5.0),
                       caption="Share of shifted ID flagged against severity (dotted: the 5 % of ID test flagged)")


def _calibration(rep: HtmlReport, result: BenchmarkResult, order: list[str], chosen: list[str], figures: bool) -> None:
    table = calibration_table(result)
    if table.empty:
        return
    table = table.reindex([d for d in order if d in table.index])
    best = {c: "max" for c in table.columns if c.startswith(("BH power", "ρ", "misclass"))}
    best.update({c: "min" for c in table.columns if c in ("AURC", "E-AURC", "AUGRC")})
    rep.section("Calibration, screening and failure prediction")
    rep.text("Conformal p-values from ID validation scores. **False alarms**: share of ID test with p ≤ 0.05 "
             "(target ≤ 5). **BH**: Benjamini–Hochberg at FDR 0.1 on one batch of ID test + near + far sets "
             "(realised FDR, power). **ρ**: Spearman correlation of score with shift severity (ID test = 0). "
             "**AURC / E-AURC / AUGRC** (lower is better) and **misclassification AUROC**: selective classification "
             "on ID test ∪ the shifted sets, accepting the least OOD-looking inputs first. All ×100.")
    flags = [(d, c) for c in table.columns if c.startswith("false alarms") for d in table.index
             if table.loc[d, c] > 0.05 * 1.5]
    rep.table(table, caption="Calibration and failure metrics", percent=True, best=best, flag_cells=flags,
              index_name="detector")
    if not figures:
        return
    from ..calibrate import ConformalCalibrator
    from ..plots import pvalue_calibration, risk_coverage

    pv = {d: ConformalCalibrator(result.scores[d]["val"]).pvalues(result.scores[d]["test"]).cpu().numpy()
          for d in chosen}
    figs, caps = [pvalue_calibration(pv, title="ID test p-values")], [
        "Empirical false-alarm rate against the nominal level: a valid p-value stays on or below the diagonal"]
    labelled = [k for k in ["test", *(t.name for t in result.test_sets if t.kind == "covariate")] if k in result.correct]
    if labelled:
        correct = np.concatenate([result.correct[k] for k in labelled])
        if 0 < correct.sum() < correct.size:
            scores = {d: np.concatenate([result.scores[d][k] for k in labelled]) for d in chosen}
            figs.append(risk_coverage(scores, correct, title="ID test ∪ shifted sets"))
            caps.append("Error rate among accepted inputs as coverage grows (inputs accepted least-OOD first)")
    rep.figures(figs, caps)


def build_report(result: BenchmarkResult, metrics: Sequence[str] = ("auroc", "ood_accepted_at_95_id"),
                 rank_by: str = "auroc", settings: Mapping[str, Any] | None = None, calibration: bool = False,
                 figures: bool = True, plot_detectors: Sequence[str] | None = None,
                 title: str | None = None) -> HtmlReport:
    """The full report as an :class:`HtmlReport` (call ``.write(path)`` or ``.to_markdown()``; add sections of
    your own before writing). ``calibration``: add the calibration / screening / failure section;
    ``figures``: draw the plots (ROC, histograms, severity, p-values, risk–coverage) for ``plot_detectors``
    (default: the top three of the ranking and MSP)."""
    order = list(ranking(result, rank_by).index)
    order += [d for d in result.detectors if d not in order]
    chosen = _plot_detectors(order, plot_detectors)
    rep = HtmlReport(title or result.name, subtitle="oodlens benchmark report")
    _overview(rep, result, rank_by)
    _main_tables(rep, result, metrics, order)
    if figures:
        _score_figures(rep, result, order, chosen)
    _covariate(rep, result, order, chosen, figures)
    if calibration:
        _calibration(rep, result, order, chosen, figures)
    rep.section("Run settings")
    rep.settings(run_settings(result, settings))
    rep.table(settings_table(result), caption="Per detector", index_name="detector")
    if result.skipped or result.notes:
        rep.text("\n".join([f"- Skipped {k}: {v}" for k, v in result.skipped.items()]
                           + [f"- Note: {n}" for n in result.notes]))
    return rep


def render_markdown(result: BenchmarkResult, metrics: Sequence[str] = ("auroc", "ood_accepted_at_95_id"),
                    rank_by: str = "auroc", settings: Mapping[str, Any] | None = None,
                    calibration: bool = False) -> str:
    """Every table of a run as Markdown (the HTML report's sections without the figures)."""
    return build_report(result, metrics, rank_by, settings, calibration, figures=False).to_markdown(level=2)


def render_html(result: BenchmarkResult, metrics: Sequence[str] = ("auroc", "ood_accepted_at_95_id"),
                rank_by: str = "auroc", settings: Mapping[str, Any] | None = None, calibration: bool = False,
                figures: bool = True) -> str:
    """The self-contained HTML report as a string."""
    return build_report(result, metrics, rank_by, settings, calibration, figures).to_html()


def markdown_table(df: pd.DataFrame, pct: bool = True, index_name: str = "detector") -> str:
    """A Markdown table in the report style (values ×100 with one decimal when ``pct``)."""
    return _markdown_table(df, percent=pct, index_name=index_name)


def write_reports(result: BenchmarkResult, folder: str | os.PathLike, markdown: str | None = None,
                  settings: Mapping[str, Any] | None = None, calibration: bool = False,
                  report: HtmlReport | None = None, **kwargs: Any) -> list[Path]:
    """Write ``report.md``, ``report.html`` (self-contained, with figures) and the tidy ``results.csv`` into
    ``folder``. ``markdown``: text to write instead of the generated Markdown; ``report``: an already built
    :class:`HtmlReport` (e.g. with extra sections) instead of :func:`build_report`'s."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "report.md", folder / "report.html", folder / "results.csv"]
    rep = report or build_report(result, settings=settings, calibration=calibration, **kwargs)
    paths[0].write_text(markdown if markdown is not None else rep.to_markdown(level=2), encoding="utf-8")
    rep.write(paths[1])
    result.table.to_csv(paths[2], index=False)
    return paths


__all__ = ["BELOW_CHANCE", "FPR_CONVENTION", "METRIC_TITLES", "below_chance", "below_chance_text", "build_report",
           "headline",
           "markdown_table", "ranking", "render_html", "render_markdown", "run_settings", "settings_table",
           "summary", "write_reports"]
