"""One self-contained HTML report: a single file, figures embedded as base64 PNG (or inline SVG), one stylesheet,
no script, no network access — it opens offline and can be mailed as it is.

How to use it (any demo or script)::

    from oodlens.bench.html import HtmlReport

    rep = HtmlReport("digits benchmark", subtitle="CNN on digits 0-5, seed 0")
    rep.section("Main results", "Values ×100, one decimal. Higher score = more OOD.")
    rep.table(df, caption="AUROC ↑", best="max", percent=True)     # best value per column marked
    rep.figure(fig, caption="ROC curves")                           # a matplotlib Figure, embedded as PNG
    rep.text("A paragraph.\\n\\nAnother one; lines starting '- ' become a list.")
    rep.settings({"seed": 0, "oodlens": "0.1.0"})                   # a definition list
    rep.section("Detection", df_boxes, fig_boxes)                   # or all at once: str / DataFrame / Figure
    rep = HtmlReport.from_markdown(markdown_text)                   # or from the Markdown a demo prints already
    path = rep.write("out/report.html", markdown="out/report.md")   # folders created; Markdown optional

Each ``section`` starts a new ``<section id=...>`` listed in the table of contents; ``table``, ``figure``,
``text``, ``settings``, ``figures`` (a row of figures) and ``raw`` (trusted HTML) add to the current section.
Every call returns the report, so calls chain. Text is escaped; ``**bold**``, ``*italic*`` and ```code``` are rendered.
``rep.to_markdown()`` gives the same sections, text and tables as Markdown (figures left out), in the table
style of :func:`oodlens.bench.reports.tables.markdown_table` (best value in bold).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html as _html
import io
import numbers
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import OODLensError
from ._html_style import CSS


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _inline(text: str) -> str:
    """Escape, then render ``**bold**`` and ```code```."""
    out = _html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![*\w])\*([^*\s][^*]*?)\*(?![*\w])", r"<em>\1</em>", out)


def text_html(text: str) -> str:
    """Paragraphs (blank-line separated); a block whose lines all start with ``- `` becomes a list."""
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", str(text)) if b.strip()]
    parts = []
    for block in blocks:
        lines = block.splitlines()
        if all(line.lstrip().startswith("- ") for line in lines):
            items = "".join(f"<li>{_inline(line.lstrip()[2:])}</li>" for line in lines)
            parts.append(f"<ul>{items}</ul>")
        else:
            parts.append(f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>")
    return "\n".join(parts)


def figure_bytes(fig: Any, fmt: str = "png", dpi: int = 130) -> bytes:
    """Render a matplotlib Figure to PNG or SVG bytes (Agg canvas; no pyplot, no display needed)."""
    if fmt not in ("png", "svg"):
        raise OODLensError(f"figure format must be 'png' or 'svg', got {fmt!r}")
    if not hasattr(fig, "savefig"):
        raise OODLensError(f"expected a matplotlib Figure, got {type(fig).__name__}")
    if fig.canvas is None or type(fig.canvas).__name__ == "FigureCanvasBase":
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    tight = fig.get_layout_engine() is None  # a layout engine already fits the labels: skip the extra draw
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight" if tight else None, facecolor="white")
    return buf.getvalue()


def figure_html(fig: Any, caption: str | None = None, alt: str | None = None, fmt: str = "png", dpi: int = 130) -> str:
    """A ``<figure>`` with the image embedded (base64 PNG ``<img>``, or inline ``<svg>``)."""
    data = figure_bytes(fig, fmt, dpi)
    alt_text = _html.escape(alt or caption or "figure", quote=True)
    if fmt == "svg":
        svg = data.decode("utf-8")
        svg = svg[svg.find("<svg"):]
        body = f'<div role="img" aria-label="{alt_text}">{svg}</div>'
    else:
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        body = f'<img src="{uri}" alt="{alt_text}">'
    cap = f"<figcaption>{_inline(caption)}</figcaption>" if caption else ""
    return f"<figure>{body}{cap}</figure>"


def table_html(df: Any, caption: str | None = None, best: str | Mapping[str, str] | None = None,
               percent: bool = False, digits: int = 1, warn_rows: Iterable[Any] = (),
               mean_rows: Iterable[Any] = (), index: bool = True, index_name: str | None = None,
               flag_cells: Iterable[tuple[Any, Any]] = (), markup: bool = False) -> str:
    """A DataFrame as an HTML table. Numbers get one format (×100 when ``percent``, ``digits`` decimals).
    ``best``: ``"max"`` / ``"min"`` for every numeric column, or ``{column: "max"|"min"}``; the best value of each
    such column (over rows not in ``mean_rows``) is marked (bold, tinted, ``class="best"``). ``warn_rows``: index
    labels shaded as a warning; ``flag_cells``: (row, column) pairs shaded (``class="flag"``, e.g. below chance);
    ``mean_rows``: summary rows set apart (never marked best). ``markup``: text cells are Markdown (``**95.0**``
    marks a best value) — for tables read from Markdown. Number-like text (``95.3 ± 0.4``, ``12 %``) is
    right-aligned like numbers."""
    import pandas as pd

    from .reports.markdown_blocks import looks_numeric
    from .reports.tables import best_cells, cell_text

    if not isinstance(df, pd.DataFrame):
        raise OODLensError(f"table expects a pandas DataFrame, got {type(df).__name__}")
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise OODLensError(f"digits must be an integer >= 0, got {digits!r}")
    warn, means, flags = set(warn_rows), set(mean_rows), set(flag_cells)
    marked = best_cells(df, best, means, percent, digits)
    names = [index_name if index_name is not None else (df.index.name or "")] if index else []
    def numeric_cell(v: Any) -> bool:
        text, numeric = cell_text(v, percent, digits)
        return numeric or looks_numeric(text)  # "3.6 ± 0.5" pre-formatted by a demo reads as a number

    texty = [not any(numeric_cell(v) for v in df[c].tolist() if str(v).strip() not in ("", "–", "-"))
             for c in df.columns]
    grouped = isinstance(df.columns, pd.MultiIndex) and df.columns.nlevels == 2
    labels = [c[1] if grouped else c for c in df.columns]
    starts = {j for j, c in enumerate(df.columns) if grouped and (j == 0 or df.columns[j - 1][0] != c[0])}

    def th(n: Any, cls: list[str]) -> str:
        return f"<th scope='col'{' class=' + chr(39) + ' '.join(cls) + chr(39) if cls else ''}>{_html.escape(str(n))}</th>"

    head = "".join(th(n, []) for n in names) + "".join(
        th(n, (["text"] if t else []) + (["gs"] if j in starts else [])) for j, (n, t) in enumerate(zip(labels, texty)))
    if grouped:  # a first header row with one cell per group of columns (e.g. shift over its severities)
        spans: list[list] = []
        for c in df.columns:
            if spans and spans[-1][0] == c[0]:
                spans[-1][1] += 1
            else:
                spans.append([c[0], 1])
        top = "".join(f"<th scope='col'></th>" for _ in names) + "".join(
            f"<th scope='colgroup' colspan='{n}' class='group gs'>{_html.escape(str(g))}</th>" for g, n in spans)
        head = f"{top}</tr><tr>{head}"
    rows = []
    for i, (key, row) in enumerate(df.iterrows()):
        cls = " ".join(x for x in ("warn" if key in warn else "", "mean" if key in means else "") if x)
        cells = [f"<th scope='row'>{_html.escape(str(key))}</th>"] if index else []
        for j, (c, v) in enumerate(zip(df.columns, row.tolist())):
            text, numeric = cell_text(v, percent, digits)
            classes = ([] if numeric_cell(v) else ["text"]) + (["gs"] if j in starts else [])
            if (key, c) in flags or (markup and text.rstrip().endswith("†")):
                classes.append("flag")
            if i in marked.get(c, ()) or (markup and text.strip().startswith("**") and text.strip().endswith("**")):
                classes.append("best")
                text = f"<strong>{_html.escape(text.strip().strip('*'))}</strong>"
            else:
                text = _inline(text) if markup else _html.escape(text)
            attr = f" class='{' '.join(classes)}'" if classes else ""
            cells.append(f"<td{attr}>{text}</td>")
        rows.append(f"<tr{f' class={chr(39)}{cls}{chr(39)}' if cls else ''}>{''.join(cells)}</tr>")
    cap = f"<caption>{_inline(caption)}</caption>" if caption else ""
    return (f"<div class='table-wrap'><table>{cap}<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


class HtmlReport:
    """Build a report section by section, then :meth:`write` one self-contained HTML file (see the module
    docstring for an example). :meth:`to_markdown` renders the same sections, text and tables (not the figures)
    as Markdown, so one builder gives both files."""

    def __init__(self, title: str, subtitle: str | None = None, toc: bool = True) -> None:
        self.title = str(title)
        self.subtitle = subtitle
        self.toc = toc
        self._sections: list[tuple[str, str, list[tuple[str, Any]]]] = []  # (id, name, items)
        self._intro: list[tuple[str, Any]] = []
        self._ids: set[str] = set()

    @classmethod
    def from_markdown(cls, text: str, title: str | None = None, subtitle: str | None = None) -> "HtmlReport":
        """A report from Markdown a demo already prints (``#`` title, ``##`` sections, pipe tables with
        ``**best**`` cells, lists, ``>`` call-outs); add figures or sections to it before :meth:`write`."""
        from .reports.markdown_blocks import parse_markdown

        if not isinstance(text, str):
            raise OODLensError(f"from_markdown expects the Markdown text (a str), got {type(text).__name__}")
        found, blocks = parse_markdown(text)
        rep = cls(title or found or "oodlens report", subtitle)
        for kind, payload in blocks:
            if kind == "section":
                rep.section(payload)
            elif kind == "table":
                df, caption = payload
                rep.table(df, caption, index=False, markup=True)
            elif kind == "code":
                rep.raw(f"<pre><code>{_html.escape(payload)}</code></pre>")
            else:
                getattr(rep, kind)(payload)  # heading / text / callout
        return rep

    # -- structure ------------------------------------------------------------------------------------------------
    def section(self, name: str, *items: Any) -> "HtmlReport":
        """Start a section; ``items`` (str → text, DataFrame → table, Figure → figure) are added to it."""
        self._sections.append((_slug(name, self._ids), str(name), []))
        for item in items:
            self.add(item)
        return self

    def _put(self, kind: str, payload: Any) -> "HtmlReport":
        (self._sections[-1][2] if self._sections else self._intro).append((kind, payload))
        return self

    def add(self, item: Any) -> "HtmlReport":
        """Add a str (text), a DataFrame (table) or a matplotlib Figure (figure) to the current section."""
        import pandas as pd

        if isinstance(item, str):
            return self.text(item)
        if isinstance(item, pd.DataFrame):
            return self.table(item)
        if hasattr(item, "savefig"):
            return self.figure(item)
        raise OODLensError(f"cannot add {type(item).__name__} to a report: use a str, a DataFrame or a Figure")

    def heading(self, text: str) -> "HtmlReport":
        """A sub-heading (``<h3>``) inside the current section."""
        return self._put("heading", str(text))

    def text(self, text: str, note: bool = False) -> "HtmlReport":
        """Paragraphs (``note=True``: smaller, muted)."""
        return self._put("note" if note else "text", str(text))

    def callout(self, text: str) -> "HtmlReport":
        """A highlighted paragraph (a warning or a reading the reader should not miss)."""
        return self._put("callout", str(text))

    def table(self, df: Any, caption: str | None = None, **kwargs: Any) -> "HtmlReport":
        """A table; keyword arguments as :func:`table_html` (``best``, ``percent``, ``digits``, ``warn_rows``,
        ``flag_cells``, ``mean_rows``, ``index``, ``index_name``). Checked now, rendered at output."""
        table_html(df, caption, **kwargs)  # validate early: a bad table fails where it is added
        return self._put("table", (df, caption, kwargs))

    def figure(self, fig: Any, caption: str | None = None, alt: str | None = None, fmt: str = "png",
               dpi: int = 130) -> "HtmlReport":
        """A matplotlib Figure embedded as base64 PNG (``fmt="svg"``: inline SVG); rendered once, now."""
        return self._put("html", figure_html(fig, caption, alt, fmt, dpi))

    def figures(self, figs: Sequence[Any], captions: Sequence[str | None] | None = None, fmt: str = "png",
                dpi: int = 130) -> "HtmlReport":
        """Several figures side by side (wrapping on narrow screens)."""
        caps = list(captions) if captions is not None else [None] * len(figs)
        if len(caps) != len(figs):
            raise OODLensError(f"{len(figs)} figures but {len(caps)} captions")
        inner = "".join(figure_html(f, c, fmt=fmt, dpi=dpi) for f, c in zip(figs, caps))
        return self._put("html", f"<div class='figrow'>{inner}</div>")

    def settings(self, items: Mapping[str, Any]) -> "HtmlReport":
        """A definition list of run settings (seed, parameters, versions, ...)."""
        if not isinstance(items, Mapping):
            raise OODLensError(f"settings expects a mapping {{name: value}}, got {type(items).__name__}")
        return self._put("settings", {str(k): str(v) for k, v in items.items()})

    def raw(self, html_text: str) -> "HtmlReport":
        """Trusted HTML, inserted as is (left out of the Markdown)."""
        return self._put("html", str(html_text))

    # -- output ---------------------------------------------------------------------------------------------------
    @property
    def section_names(self) -> list[str]:
        return [name for _, name, _ in self._sections]

    @staticmethod
    def _item_html(kind: str, payload: Any) -> str:
        if kind == "heading":
            return f"<h3>{_inline(payload)}</h3>"
        if kind == "text":
            return text_html(payload)
        if kind == "note":
            return f"<div class='note'>{text_html(payload)}</div>"
        if kind == "callout":
            return f"<div class='callout'>{text_html(payload)}</div>"
        if kind == "table":
            df, caption, kwargs = payload
            return table_html(df, caption, **kwargs)
        if kind == "settings":
            rows = "".join(f"<dt>{_html.escape(k)}</dt><dd>{_inline(v)}</dd>" for k, v in payload.items())
            return f"<dl class='settings'>{rows}</dl>"
        return payload  # html

    @staticmethod
    def _item_markdown(kind: str, payload: Any) -> str | None:
        from .reports.tables import markdown_table

        if kind == "heading":
            return f"### {payload}"
        if kind in ("text", "note"):
            return payload
        if kind == "callout":
            return "\n".join(f"> {line}" if line else ">" for line in payload.splitlines())
        if kind == "table":
            df, caption, kw = payload

            def one(part: Any, cap: str | None, best: Any, flags: Any) -> str:
                md = markdown_table(part, percent=kw.get("percent", False), digits=kw.get("digits", 1), best=best,
                                    index=kw.get("index", True), index_name=kw.get("index_name"),
                                    mean_rows=kw.get("mean_rows", ()), flag_cells=flags)
                return (f"**{cap}**\n\n" if cap else "") + md

            best, flags = kw.get("best"), list(kw.get("flag_cells", ()))
            if not (getattr(df.columns, "nlevels", 1) == 2):
                return one(df, caption, best, flags)
            # column groups: one narrow table per group, so that the terminal does not wrap a wide one
            out = []
            for group in dict.fromkeys(c[0] for c in df.columns):
                cols = [c for c in df.columns if c[0] == group]
                part = df[cols].copy()
                part.columns = [c[1] for c in cols]
                sub_best = best if not isinstance(best, Mapping) else {c[1]: best[c] for c in cols if c in best}
                sub_flags = [(r, c[1]) for r, c in flags if c in cols]
                out.append(one(part, f"{caption}: {group}" if caption else str(group), sub_best, sub_flags))
            return "\n\n".join(out)
        if kind == "settings":
            return "\n".join(f"- {k}: {v}" for k, v in payload.items())
        return None  # figures and raw HTML

    def to_markdown(self, level: int = 1) -> str:
        """The same report as Markdown: ``level`` is the title's heading level (sections one below)."""
        h = "#" * level
        out = [f"{h} {self.title}"] + ([self.subtitle] if self.subtitle else [])
        for kind, payload in self._intro:
            md = self._item_markdown(kind, payload)
            if md is not None:
                out.append(md)
        for _, name, items in self._sections:
            out.append(f"{h}# {name}")
            for kind, payload in items:
                md = self._item_markdown(kind, payload)
                if md is not None:
                    out.append(md.replace("### ", f"{h}## ", 1) if kind == "heading" else md)
        return "\n\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        """The whole document as one string."""
        from .. import __version__

        title = _html.escape(self.title)
        sub = f"<p class='subtitle'>{_inline(self.subtitle)}</p>" if self.subtitle else ""
        toc = ""
        if self.toc and len(self._sections) > 1:
            items = "".join(f"<li><a href='#{sid}'>{_html.escape(name)}</a></li>" for sid, name, _ in self._sections)
            toc = f"<nav class='toc' aria-label='contents'><strong>Contents</strong><ol>{items}</ol></nav>"
        body = "\n".join(self._item_html(k, p) for k, p in self._intro)
        for sid, name, items in self._sections:
            body += (f"\n<section id='{sid}'>\n<h2>{_html.escape(name)}</h2>\n"
                     + "\n".join(self._item_html(k, p) for k, p in items) + "\n</section>")
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return ("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
                "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
                f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
                f"<header class='top'><h1>{title}</h1>{sub}</header>\n{toc}\n{body}\n"
                f"<footer>Written by oodlens {__version__} on {stamp}. One self-contained file: figures are "
                "embedded, nothing is loaded from the network.</footer>\n</main>\n</body>\n</html>\n")

    def write(self, path: str | Path, markdown: str | Path | None = None) -> Path:
        """Write the report (UTF-8) to ``path``, creating its folder; with ``markdown``, also write
        :meth:`to_markdown` there. Returns the HTML path."""
        path = Path(path)
        for target, content in [(path, self.to_html)] + ([(Path(markdown), self.to_markdown)] if markdown else []):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content(), encoding="utf-8")
            except OSError as e:
                raise OODLensError(f"cannot write the report to {target}: {e.strerror or e}") from None
        return path


__all__ = ["CSS", "HtmlReport", "figure_bytes", "figure_html", "table_html", "text_html"]
