"""mkdocs hooks: drop navigation entries whose Markdown file does not exist (yet), so that the nav can list pages
other parts of the project add later while ``mkdocs build --strict`` keeps passing. Not part of the site."""

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


def on_config(config: Any, **_: Any) -> Any:
    if config.get("nav"):
        config["nav"] = _keep(config["nav"], Path(config["docs_dir"]))
    return config


_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):(?=<code)")


def on_page_content(html: str, **_: Any) -> str:
    """Docstrings use Sphinx roles (``:func:`name```); show just the code name."""
    return _ROLE.sub("", html)
