"""docs/calibration.md: its Python example runs as written and prints what the page says it prints."""

import re
from pathlib import Path


def test_calibration_page_example_runs(capsys):
    text = (Path(__file__).parent.parent / "docs" / "calibration.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    ns: dict = {}
    for b in blocks:
        exec(compile(b, "docs/calibration.md", "exec"), ns)
    out = capsys.readouterr().out
    assert "('C',) pooled" in out and "ESS" in out and "calibrated in group 'B'" in out
