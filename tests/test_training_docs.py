"""docs/training.md: its Python example runs as it is and prints results."""


def test_training_page_example_runs(run_docs_page):
    out = run_docs_page("training.md")
    assert "far-OOD AUROC" in out and out.count("\n") == 4
