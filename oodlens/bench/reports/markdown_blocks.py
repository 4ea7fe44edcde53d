"""Read the Markdown a demo already prints into report blocks, so that ``HtmlReport.from_markdown(text)`` turns
it into the same self-contained HTML report as the benchmarks'. Understood: ``#`` title, ``##`` sections,
``###``+ sub-headings, pipe tables (a ``**bold**`` caption line right above one becomes its caption), ``- ``
lists, ``> `` quotes (shown as call-outs), fenced code, and paragraphs."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

_NUMBER = re.compile(r"^\**\s*[-+−]?(\d[\d,]*\.?\d*|\.\d+)\s*(%|±\s*\d[\d.]*|\(.*\))?\s*\**\s*†?$")


def looks_numeric(text: str) -> bool:
    """True for cells such as ``95.3``, ``**-1.2**``, ``12 %``, ``95.3 ± 0.4``, ``45.5 †``, ``–``."""
    t = text.strip()
    return t in ("–", "-", "n/a") or bool(_NUMBER.match(t))


def _table(lines: list[str]) -> pd.DataFrame:
    def cells(line: str) -> list[str]:  # split on unescaped pipes; "\|" is a pipe inside a cell
        inner = line.strip()
        inner = inner[1:] if inner.startswith("|") else inner
        inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]

    header = cells(lines[0])
    body = [cells(line) for line in lines[2:]] if len(lines) > 1 and set(lines[1].replace("|", "").strip()) <= set(":- ") else [cells(line) for line in lines[1:]]
    width = len(header)
    body = [(r + [""] * width)[:width] for r in body]
    names = [h or " " * (i + 1) for i, h in enumerate(header)]  # unique blank names
    return pd.DataFrame(body, columns=names)


def parse_markdown(text: str) -> tuple[str | None, list[tuple[str, Any]]]:
    """(title, blocks): blocks are ``("section", name)``, ``("heading", text)``, ``("text", markdown)``,
    ``("callout", text)``, ``("code", text)`` and ``("table", (DataFrame, caption))``."""
    lines = str(text).splitlines()
    levels = [len(m.group(1)) for m in (re.match(r"^(#{1,6})\s", ln.strip()) for ln in lines) if m]
    # no "#" title: a single top-level heading that opens the text (e.g. "## run name") is the title
    shift = 0
    if levels and 1 not in levels and levels.count(min(levels)) == 1 and levels[0] == min(levels):
        shift = min(levels) - 1
    title, blocks, para = None, [], []
    caption: str | None = None

    def flush() -> None:
        nonlocal caption
        if para:
            blocks.append(("text", "\n".join(para)))
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            blocks.append(("code", "\n".join(lines[i + 1:j])))
            i = j + 1
            continue
        if stripped.startswith("|"):
            flush()
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            if blocks and blocks[-1][0] == "text" and re.fullmatch(r"\*\*[^*]+\*\*", blocks[-1][1].strip()):
                caption = blocks.pop()[1].strip()[2:-2]
            blocks.append(("table", (_table(lines[i:j]), caption)))
            caption = None
            i = j
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if m:
            flush()
            level, name = max(1, len(m.group(1)) - shift), m.group(2).strip()
            if level == 1 and title is None and not blocks:
                title = name
            elif level <= 2:
                blocks.append(("section", name))
            else:
                blocks.append(("heading", name))
        elif stripped.startswith(">"):
            flush()
            quote = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                quote.append(lines[i].strip()[1:].strip())
                i += 1
            blocks.append(("callout", "\n".join(quote)))
            continue
        elif not stripped:
            flush()
        else:
            if para and stripped.startswith("- ") != para[-1].lstrip().startswith("- "):
                flush()  # a list right after a paragraph (or the other way round) is its own block
            para.append(stripped)
        i += 1
    flush()
    return title, blocks


__all__ = ["looks_numeric", "parse_markdown"]
