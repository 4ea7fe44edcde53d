"""docs/training.md: its Python example runs as it is and prints results."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_training_page_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "training.md").read_text(), re.S)
    assert blocks
    ns: dict = {"__name__": "docs_training"}
    for block in blocks:
        exec(compile(block, "docs/training.md", "exec"), ns)
    out = capsys.readouterr().out
    assert "far-OOD AUROC" in out and out.count("\n") == 4
