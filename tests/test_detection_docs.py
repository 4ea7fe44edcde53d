"""The Python examples of docs/detection.md run as written."""


def test_docs_examples_run(run_docs_page):
    out = run_docs_page("detection.md")
    assert "AUROC" in out and "unknown_recall" in out
