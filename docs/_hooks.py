"""mkdocs hooks: drop navigation entries whose Markdown file does not exist (yet) and add top-level pages the nav
does not list, so that pages other parts of the project add appear while ``mkdocs build --strict`` keeps passing;
strip Sphinx roles from rendered docstrings. Not part of the site."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.nav")


def _keep(entry: Any, docs: Path) -> Any:
    if isinstance(entry, str):
        return entry if entry.startswith(("http://", "https://")) or (docs / entry).is_file() else None
    if isinstance(entry, dict):
        out = {}
        for title, value in entry.items():
            kept = _keep(value, docs)
            if kept not in (None, []):
                out[title] = kept
            else:
                log.info("nav: %s left out (no file yet)", title)
        return out or None
    if isinstance(entry, list):
        return [k for k in (_keep(e, docs) for e in entry) if k is not None]
    return entry


def _listed(entry: Any) -> set[str]:
    if isinstance(entry, str):
        return {entry}
    if isinstance(entry, dict):
        return set().union(*(_listed(v) for v in entry.values())) if entry else set()
    if isinstance(entry, list):
        return set().union(*(_listed(v) for v in entry)) if entry else set()
    return set()


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem.replace("_", " ").capitalize()


def on_config(config: Any, **_: Any) -> Any:
    """Drop entries whose file is missing; add top-level pages that the nav does not list yet to "Guides"."""
    nav = config.get("nav")
    if not nav:
        return config
    docs = Path(config["docs_dir"])
    nav = _keep(nav, docs)
    extra = sorted(p for p in docs.glob("*.md") if p.name not in _listed(nav) and not p.name.startswith("_"))
    if extra:
        guides = next((e for e in nav if isinstance(e, dict) and "Guides" in e), None)
        if guides is None:
            guides = {"Guides": []}
            nav.insert(1, guides)
        guides["Guides"] += [{_title(p): p.name} for p in extra]
    config["nav"] = nav
    return config


_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):(?=<code)")


def on_page_content(html: str, **_: Any) -> str:
    """Docstrings use Sphinx roles (``:func:`name```); show just the code name."""
    return _ROLE.sub("", html)
