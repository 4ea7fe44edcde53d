"""The documentation: the runnable examples of the task pages run, and ``mkdocs build --strict`` (API reference
generated from the docstrings, warnings as errors) succeeds. The build is skipped, with the reason, where the
``docs`` extra (mkdocs, mkdocstrings[python]) is not installed; ``.ci/run`` installs it."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: pages whose ```python blocks run as they are, top to bottom, in one namespace
RUNNABLE = ["classification.md", "multimodal.md", "foundation.md", "segmentation.md"]


@pytest.mark.parametrize("page", RUNNABLE)
def test_page_examples_run(page, run_docs_page):
    assert run_docs_page(page)  # the examples print their results


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="mkdocs / mkdocstrings not installed: pip install -e '.[docs]' to build the docs")
def test_mkdocs_build_strict(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    api = (tmp_path / "site" / "api" / "plots" / "index.html").read_text()
    assert "roc_curves" in api and "doc-heading" in api  # the reference was generated from the docstrings
    for page in ("classification", "multimodal"):
        assert (tmp_path / "site" / page / "index.html").is_file()
