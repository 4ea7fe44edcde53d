"""docs/calibration.md: its Python example runs as written and prints what the page says it prints."""


def test_calibration_page_example_runs(run_docs_page):
    out = run_docs_page("calibration.md")
    assert "('C',) pooled" in out and "ESS" in out and "calibrated in group 'B'" in out
