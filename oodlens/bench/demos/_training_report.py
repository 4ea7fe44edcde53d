"""Tables of ``oodlens demo training``: mean ± standard deviation over seeds, Markdown for the terminal, and with
``--out`` report.md / report.html (:class:`oodlens.bench.html.HtmlReport`) and results.csv (every seed's numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..html import HtmlReport

METRICS = ("id_acc", "near_auroc", "near_fpr95", "far_auroc", "far_fpr95", "covariate_auroc", "covariate_fpr95")
TITLES = {"id_acc": "ID acc ↑", "near_auroc": "near AUROC ↑", "near_fpr95": "near FPR95 ↓", "far_auroc": "far AUROC ↑",
          "far_fpr95": "far FPR95 ↓", "covariate_auroc": "covariate AUROC ↑", "covariate_fpr95": "covariate FPR95 ↓"}
FPR_NOTE = ("FPR95 = share of OOD inputs accepted at the threshold that keeps 95 % of ID test (the MSP / ODIN / "
            "Energy / VOS papers' convention). Values ×100, mean ± standard deviation over the seeds. near = digits "
            "6–9; far = mean over photo patches (china.jpg) and uniform noise; covariate = mean over rotated, noised "
            "and blurred ID test digits (severities 1–5), flagged as OOD.")


def aggregate(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per (method, score): mean and std over seeds of every metric (columns ``<metric>`` and ``<metric>_std``)."""
    df = pd.DataFrame(rows)
    g = df.groupby(["method", "score"], sort=False)[list(METRICS)]
    out = g.mean().join(g.std(ddof=1).add_suffix("_std").fillna(0.0))
    return out.reset_index()


def _cell(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def pretty(agg: pd.DataFrame, titles: dict[str, str], own: bool) -> pd.DataFrame:
    sub = agg[agg.score.str.startswith("own: ") == own]
    table = pd.DataFrame({"method": [titles.get(m, m) for m in sub.method],
                          "score": [s.removeprefix("own: ") for s in sub.score]})
    for m in METRICS:
        table[TITLES[m]] = [_cell(a, b) for a, b in zip(sub[m], sub[f"{m}_std"])]
    return table.set_index("method")


def build(rows: list[dict[str, Any]], titles: dict[str, str], settings: dict[str, Any], notes: Sequence[str]) -> HtmlReport:
    agg = aggregate(rows)
    rep = HtmlReport("Training-time OOD methods on digits", subtitle=settings.get("seeds and time", ""))
    rep.section("Each method with its own score", FPR_NOTE)
    rep.table(pretty(agg, titles, own=True), caption="own score of each method")
    rep.section("Post-hoc detectors on top of each trained network",
                "The same registered detectors, fitted on each network's ID train features.")
    rep.table(pretty(agg, titles, own=False), caption="post-hoc scores")
    if notes:
        rep.section("Notes", "\n".join(f"- {n}" for n in notes))
    rep.section("Settings")
    rep.settings(settings)
    return rep


def write(rep: HtmlReport, rows: list[dict[str, Any]], folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    html = rep.write(folder / "report.html", markdown=folder / "report.md")
    csv = folder / "results.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return [folder / "report.md", html, csv]
