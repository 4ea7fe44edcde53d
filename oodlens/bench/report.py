"""Render a :class:`~oodlens.bench.runner.BenchmarkResult` as Markdown / HTML / CSV tables.

The main table has one row per detector and, per metric, the near-OOD sets, their mean, the far-OOD sets and
their mean. Covariate sets get their own table (one column per set, grouped by shift and severity).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

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


def summary(result: BenchmarkResult, metric: str, kinds: Sequence[str] = ("near", "far")) -> pd.DataFrame:
    """detector × (test sets of ``kinds`` + a mean column per kind) for one metric."""
    wide = result.metric(metric)
    cols: dict[str, pd.Series] = {}
    for kind in kinds:
        names = [t.name for t in result.test_sets if t.kind == kind]
        names = [n for n in names if n in wide.columns]
        for n in names:
            cols[n] = wide[n]
        if names:
            cols[f"{kind} mean"] = wide[names].mean(axis=1)
    return pd.DataFrame(cols, index=wide.index)


def _fmt(v: object, pct: bool) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{100 * v:.1f}" if pct else f"{v:.3f}"
    return str(v)


def markdown_table(df: pd.DataFrame, pct: bool = True, index_name: str = "detector") -> str:
    """A plain GitHub-flavoured Markdown table (values ×100 with one decimal when ``pct``)."""
    header = [index_name, *map(str, df.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":--"] + ["--:"] * len(df.columns)) + "|"]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx), *(_fmt(v, pct) for v in row.tolist())]) + " |")
    return "\n".join(lines)


def render_markdown(result: BenchmarkResult, metrics: Sequence[str] = ("auroc", "ood_accepted_at_95_id")) -> str:
    """Every table of a run as Markdown, with the conventions stated."""
    out = [f"## {result.name}", ""]
    if result.id_accuracy is not None:
        out.append(f"ID test accuracy: {100 * result.id_accuracy:.1f}%")
    out.append("Scores: higher = more OOD. Values ×100. Hyper-parameters tuned on validation data only"
               + (" (no validation OOD given: defaults)." if any("no validation OOD" in n for n in result.notes) else "."))
    out.append("")
    for metric in metrics:
        out += [f"### {METRIC_TITLES.get(metric, metric)}", "", markdown_table(summary(result, metric)), ""]
    cov = [t for t in result.test_sets if t.kind == "covariate"]
    if cov:
        metric = "auroc" if result.covariate_mode == "separate" else "flagged_at_95_id"
        wide = result.metric(metric)[[t.name for t in cov]]
        what = ("AUROC of ID test vs each covariate-shifted set (shift flagged as OOD)" if metric == "auroc"
                else "share of covariate-shifted ID flagged at the threshold keeping 95% of ID test (full-spectrum)")
        out += [f"### Covariate shift: {what}", "", markdown_table(wide), ""]
        if result.set_accuracy:
            acc = pd.DataFrame([{t.name: result.set_accuracy.get(t.name, np.nan) for t in cov}], index=["accuracy"])
            out += ["Classifier accuracy under each shift:", "", markdown_table(acc, index_name=""), ""]
    tuned = [f"{d}: " + ", ".join(f"{k}={v}" for k, v in result.params[d].items() if not isinstance(v, (str, list)) and v is not None)
             for d in result.detectors if result.tuned.get(d)]
    if tuned:
        out += ["Hyper-parameters chosen on validation (ID vs validation OOD, by AUROC): " + "; ".join(tuned), ""]
    if result.skipped:
        out.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in result.skipped.items()))
    for note in result.notes:
        out.append(f"Note: {note}")
    return "\n".join(out).rstrip() + "\n"


def render_html(result: BenchmarkResult, metrics: Sequence[str] = ("auroc", "ood_accepted_at_95_id")) -> str:
    parts = [f"<h2>{html.escape(result.name)}</h2>"]
    for metric in metrics:
        df = summary(result, metric) * 100
        parts.append(f"<h3>{html.escape(METRIC_TITLES.get(metric, metric))}</h3>")
        parts.append(df.to_html(float_format=lambda v: f"{v:.1f}", na_rep="–"))
    return "<!doctype html><meta charset='utf-8'>\n" + "\n".join(parts) + "\n"


def write_reports(result: BenchmarkResult, folder: str | os.PathLike, markdown: str | None = None) -> list[Path]:
    """Write ``report.md``, ``report.html`` and the tidy ``results.csv`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "report.md", folder / "report.html", folder / "results.csv"]
    paths[0].write_text(markdown or render_markdown(result))
    paths[1].write_text(render_html(result))
    result.table.to_csv(paths[2], index=False)
    return paths
