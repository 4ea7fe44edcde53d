"""The Python examples of docs/detection.md run as written."""

import re
from pathlib import Path


def test_docs_examples_run(capsys):
    text = (Path(__file__).parent.parent / "docs" / "detection.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    ns: dict = {}
    for b in blocks:
        exec(compile(b, "docs/detection.md", "exec"), ns)
    out = capsys.readouterr().out
    assert "AUROC" in out and "unknown_recall" in out
