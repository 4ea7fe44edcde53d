"""Tables of the detection demo: Markdown for the terminal and the report, CSV beside it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ...detection.bootstrap import Interval


def _fmt(v: Any) -> str:
    if isinstance(v, Interval):
        return f"{v.value:.3f} [{v.low:.3f}, {v.high:.3f}]"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.3f}"
    return "–" if v is None else str(v)


def _diff(v: Interval | None) -> str:
    if v is None:
        return "–"
    real = "*" if (v.low > 0 or v.high < 0) else ""
    return f"{v.value:+.3f} [{v.low:+.3f}, {v.high:+.3f}]{real}"


def markdown(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], diffs: Sequence[str] = ()) -> str:
    head = "| " + " | ".join(t for _, t in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_diff(r.get(k)) if k in diffs else _fmt(r.get(k)) for k, _ in columns) + " |"
            for r in rows]
    return "\n".join([head, sep, *body])


def flat(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows with intervals split into value / low / high columns (for CSV)."""
    out = []
    for r in rows:
        d = {}
        for k, v in r.items():
            if isinstance(v, Interval):
                d[k], d[f"{k}_low"], d[f"{k}_high"] = v.value, v.low, v.high
            else:
                d[k] = v
        out.append(d)
    return pd.DataFrame(out)


VOS_COLUMNS = [("ood", "OOD set"), ("method", "score"), ("auroc", "AUROC ↑ [95% CI]"),
               ("auroc_diff", "Δ AUROC vs MSP"), ("fpr95", "FPR95 (VOS) ↓ [95% CI]"),
               ("fpr95_diff", "Δ FPR95 vs MSP"), ("n_id", "ID boxes"), ("n_ood", "OOD boxes")]
OPEN_COLUMNS = [("method", "score"), ("known_map", "known mAP"), ("known_ap50", "known AP50"),
                ("unknown_recall", "U-recall"), ("unknown_recall_near", "U-recall near"),
                ("unknown_recall_far", "U-recall far"), ("unknown_ap50", "AP_U (50)"), ("a_ose", "A-OSE ↓"),
                ("wi@0.8", "WI@0.8 ↓")]
VIDEO_COLUMNS = [("method", "score"), ("aggregation", "aggregation"), ("box_auroc", "box AUROC [95% CI]"),
                 ("track_auroc", "track AUROC [95% CI]"), ("unknown_flagged", "unknowns flagged"),
                 ("median_ttd", "median TTD (frames)"), ("mean_ttd", "mean TTD")]


def example_figure(image: Any, dets: Any, gt: Any, scores: Any, threshold: float, method: str) -> Any:
    """One mixed test image: its detections outlined by OOD score (solid = flagged unknown), labelled with the
    predicted class and whether the matched object is known ('K') or unknown ('U')."""
    from ...detection.matching import assign
    from ...plots import boxes_with_scores

    m = assign(dets, gt)
    lab = gt.labels.numpy()
    tag = [("U" if lab[j] < 0 else "K") if j >= 0 else "-" for j in m]
    labels = [f"{int(c)}/{t}" for c, t in zip(dets.classes.tolist(), tag)]
    return boxes_with_scores(image, dets.boxes, scores, labels=labels, threshold=threshold,
                             title=f"{method} OOD score")


def write(out: str | Path, text: str, tables: dict[str, Sequence[dict[str, Any]]], figure: Any = None,
          figure_caption: str = "") -> list[Path]:
    """Markdown, one CSV per table and a self-contained HTML report (with ``figure`` when given)."""
    from ..html import HtmlReport

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "report.md"]
    paths[0].write_text(text + "\n")
    for name, rows in tables.items():
        p = folder / f"detection_{name}.csv"
        flat(rows).to_csv(p, index=False)
        paths.append(p)
    html = HtmlReport.from_markdown(text)
    if figure is not None:
        html.section("Example test image").figure(figure, caption=figure_caption)
    paths.append(html.write(folder / "report.html"))
    return paths
