"""Test-wide settings: one torch thread (the suite runs many tiny ops, where thread wake-ups dominate); and the
runner of a docs page's examples."""

import re
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def run_docs_page(capsys):
    """Run every ```python block of ``docs/<page>`` top to bottom in one namespace; return what they printed."""

    def run(page: str) -> str:
        blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)
        assert blocks, f"docs/{page} has no runnable example"
        ns: dict = {"__name__": f"docs_{page}"}
        for block in blocks:
            exec(compile(block, f"docs/{page}", "exec"), ns)
        return capsys.readouterr().out

    return run
