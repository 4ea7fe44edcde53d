"""Built-in demo benchmarks run by ``oodlens demo NAME``: one module per demo, named after it.

A demo module defines ``run_demo(args) -> int`` (``args``: the parsed ``oodlens demo`` options: ``cache``, ``out``,
``seed``, ``detectors``, ``no_progress``, ``threads``) and ``SUMMARY = "..."``, the one line that
``oodlens demo --help`` lists (without it, the docstring's first sentence). Modules whose name starts with ``_`` are
helpers, not demos. Discovery reads the source without importing the demos (so ``--help`` stays fast).
"""

from __future__ import annotations

import ast
import os
import pkgutil

#: the demo ``oodlens demo`` runs when no name is given
DEFAULT_DEMO = "digits"


def available_demos() -> dict[str, str]:
    """Demo name -> its one-line description, from every demo module in this package."""
    folder = os.path.dirname(__file__)
    out = {}
    for info in sorted(pkgutil.iter_modules([folder]), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        with open(os.path.join(folder, info.name + ".py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        out[info.name.replace("_", "-")] = _summary(tree)
    return out


def _summary(tree: ast.Module) -> str:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SUMMARY" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    doc = " ".join((ast.get_docstring(tree) or "").split())
    if doc.startswith("``oodlens demo") and ":" in doc:
        doc = doc.split(":", 1)[1].strip()
    return doc.split(". ")[0].rstrip(".")


def demo_entry(name: str) -> str:
    """``"module:function"`` of the demo called ``name``."""
    return f"{__name__}.{name.replace('-', '_')}:run_demo"
