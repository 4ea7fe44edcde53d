"""One table style for the terminal, Markdown and HTML: numbers ×100 with one decimal (when ``percent``), the best
value of each ranked column marked, summary rows set apart. :func:`markdown_table` pads columns so the table also
reads in a terminal; :mod:`oodlens.bench.html` uses :func:`cell_text` and :func:`best_cells` for the same format."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ...errors import OODLensError


def cell_text(v: Any, percent: bool = True, digits: int = 1) -> tuple[str, bool]:
    """(text, is_number) of one cell: floats ×100 when ``percent``, ``digits`` decimals; missing = "–"."""
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return "–", True
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else "no"), False
    if isinstance(v, (int, np.integer)):  # counts: never scaled
        return str(int(v)), True
    if isinstance(v, (int, float, np.integer, np.floating)):
        return f"{float(v) * (100 if percent else 1):.{digits}f}", True
    return str(v), False


def best_rule(df: pd.DataFrame, best: str | Mapping[str, str] | None) -> dict[Any, str]:
    """``{column: "max"|"min"}`` from ``"max"``/``"min"`` (every column) or a mapping; checks the values."""
    rule = {c: best for c in df.columns} if isinstance(best, str) else dict(best or {})
    for c, r in rule.items():
        if r not in ("max", "min"):
            raise OODLensError(f"best for column {c!r} must be 'max' or 'min', got {r!r}")
    return rule


def best_cells(df: pd.DataFrame, best: str | Mapping[str, str] | None, skip_rows: Iterable[Any] = (),
               percent: bool = True, digits: int = 1) -> dict[Any, set[int]]:
    """Row positions holding the best value of each ranked numeric column, compared as displayed (×100 when
    ``percent``, rounded to ``digits``), so every cell that reads as the best is marked; ``skip_rows``: index
    labels never marked, e.g. mean rows."""
    skip = set(skip_rows)
    rows = [i for i, key in enumerate(df.index) if key not in skip]
    out: dict[Any, set[int]] = {}
    for c, r in best_rule(df, best).items():
        if c not in df.columns or not rows:
            continue
        col = pd.to_numeric(df[c].iloc[rows], errors="coerce").to_numpy(dtype=float)
        col = np.round(col * (100 if percent else 1), digits)
        if np.isfinite(col).any():
            target = np.nanmax(col) if r == "max" else np.nanmin(col)
            out[c] = {rows[i] for i in np.flatnonzero(np.isclose(col, target, rtol=0, atol=1e-12))}
    return out


def _md_cell(text: str) -> str:
    """A cell's text made safe inside a pipe table: ``|`` escaped, line breaks as spaces."""
    return text.replace("|", "\\|").replace("\r\n", " ").replace("\n", " ")


def markdown_table(df: pd.DataFrame, percent: bool = True, digits: int = 1, best: str | Mapping[str, str] | None = None,
                   index: bool = True, index_name: str | None = "detector", mean_rows: Iterable[Any] = (),
                   flag_cells: Iterable[tuple[Any, Any]] = ()) -> str:
    """A GitHub-flavoured Markdown table, padded to line up in a terminal. The best value of each ``best`` column
    is **bold**; ``mean_rows`` are italic; ``flag_cells`` ((row, column) pairs) get a trailing ``†``."""
    if not isinstance(df, pd.DataFrame):
        raise OODLensError(f"a table needs a pandas DataFrame, got {type(df).__name__}")
    means, flags = set(mean_rows), set(flag_cells)
    marked = best_cells(df, best, means, percent, digits)
    columns = [" ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in df.columns]  # two-level: "a b"
    header = ([index_name if index_name is not None else (df.index.name or "")] if index else []) + columns
    body, numeric = [], [False] * len(header)
    for i, (key, row) in enumerate(df.iterrows()):
        cells = [f"*{key}*" if key in means else str(key)] if index else []
        for j, (c, v) in enumerate(zip(df.columns, row.tolist())):
            text, is_num = cell_text(v, percent, digits)
            numeric[j + index] = numeric[j + index] or (is_num and text != "–")
            if i in marked.get(c, ()):
                text = f"**{text}**"
            if (key, c) in flags:
                text += " †"
            cells.append(text)
        body.append(cells)
    widths = [max(len(_md_cell(h)), *(len(_md_cell(r[j])) for r in body)) if body else len(_md_cell(h))
              for j, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        cells = [_md_cell(c) for c in cells]
        return "| " + " | ".join(c.rjust(w) if numeric[j] and j else c.ljust(w)
                                 for j, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join((":" + "-" * (w + 1)) if not numeric[j] or not j else ("-" * (w + 1) + ":")
                          for j, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in body)])


__all__ = ["best_cells", "best_rule", "cell_text", "markdown_table"]
