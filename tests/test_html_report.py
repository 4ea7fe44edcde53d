"""The self-contained HTML report builder: structure, one number format, best values marked, figures embedded."""

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from oodlens.bench.html import HtmlReport, table_html, text_html
from oodlens.errors import OODLensError


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.best, self.stack = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "img":
            self.imgs.append(a)
        self.stack.append((tag, a))

    def handle_data(self, data):
        if self.stack and self.stack[-1][0] == "strong" and any("best" in (a.get("class") or "") for _, a in self.stack):
            self.best.append(data)

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass


def _fig():
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    return fig


def test_report_structure_and_embedded_png(tmp_path):
    df = pd.DataFrame({"near": [0.91, 0.955, 0.5], "far": [0.2, 0.1, 0.3]}, index=["a", "b", "c"])
    rep = (HtmlReport("My <run>", subtitle="seed 0")
           .section("Main", "Intro **bold** and `code`.", df)
           .table(df, caption="AUROC", best={"near": "max", "far": "min"}, percent=True)
           .figure(_fig(), caption="a line")
           .section("Settings").settings({"seed": 0}))
    path = rep.write(tmp_path / "sub" / "r.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "</html>" in text
    assert "My &lt;run&gt;" in text and "<run>" not in text
    assert "<strong>bold</strong>" in text and "<code>code</code>" in text
    assert rep.section_names == ["Main", "Settings"]
    assert "href='#main'" in text and "id='settings'" in text
    p = _Collect()
    p.feed(text)
    # best: max of near ×100 = 95.5, min of far ×100 = 10.0 — both on row b
    assert p.best == ["95.5", "10.0"]
    assert len(p.imgs) == 1
    uri = p.imgs[0]["src"]
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert p.imgs[0]["alt"] == "a line"
    # offline: nothing references another file or the network
    assert not re.search(r"(src|href)=['\"](?!data:|#)", text)


def test_table_format_means_and_warnings():
    df = pd.DataFrame({"x": [0.5, 0.25, np.nan], "name": ["p", "q", "r"]}, index=["d1", "d2", "mean"])
    out = table_html(df, best="max", percent=True, warn_rows=["d2"], mean_rows=["mean"])
    assert "50.0" in out and "25.0" in out and "–" in out
    assert "<tr class='warn'><th scope='row'>d2" in out
    assert "<tr class='mean'>" in out
    assert out.count("class='best'") == 1  # text column 'name' never marked
    assert "class='text'>p<" in out


def test_svg_and_figure_row():
    rep = HtmlReport("t").section("s").figures([_fig(), _fig()], ["one", "two"], fmt="svg")
    text = rep.to_html()
    assert text.count("<svg") == 2 and "class='figrow'" in text
    assert "<?xml" not in text


def test_text_lists_and_escaping():
    out = text_html("first <b>\n\n- one\n- two")
    assert "<p>first &lt;b&gt;</p>" in out and "<ul><li>one</li><li>two</li></ul>" in out


def test_bad_input_raises():
    rep = HtmlReport("t").section("s")
    with pytest.raises(OODLensError, match="DataFrame"):
        rep.table([1, 2])
    with pytest.raises(OODLensError, match="cannot add"):
        rep.add(3.0)
    with pytest.raises(OODLensError, match="'max' or 'min'"):
        table_html(pd.DataFrame({"a": [1.0]}), best="biggest")
    with pytest.raises(OODLensError, match="png' or 'svg"):
        rep.figure(_fig(), fmt="jpg")


def test_markdown_from_the_same_builder(tmp_path):
    df = pd.DataFrame({"auroc": [0.9, 0.95]}, index=["a", "b"])
    rep = (HtmlReport("T", subtitle="sub").section("S1", "para").heading("sub")
           .table(df, caption="cap", best="max", percent=True).callout("careful").settings({"seed": 1})
           .figure(_fig()))
    md = rep.to_markdown()
    assert md.startswith("# T\n\nsub\n\n## S1\n\npara\n\n### sub\n\n**cap**")
    assert "| a |     90.0 |\n| b | **95.0** |" in md
    assert "> careful" in md and "- seed: 1" in md and "<img" not in md
    html_path = rep.write(tmp_path / "r.html", markdown=tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text() == md and html_path.read_text().count("<img") == 1


def test_methods_listing_wraps_instead_of_cutting(capsys, monkeypatch):
    import sys

    from oodlens.cli import main
    from oodlens.detectors import get_detector

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    cls = get_detector("energy")
    doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__).strip().split("\n\n")[0]
    assert " ".join(doc.split()) in " ".join(out.split())  # the whole first paragraph, wrapped


def test_from_markdown_reads_a_demo_text():
    text = ("## run A\n\nIntro line\nmore.\n\n### Results\n\n**AUROC ↑**\n\n| detector | near | far |\n|:--|--:|--:|\n"
            "| msp | 90.1 | **95.0** |\n| knn | 12.5 † | 80.0 ± 1.2 |\n\n- one\n- two\n\n> careful\n\n```\ncode <x>\n```\n")
    rep = HtmlReport.from_markdown(text)
    assert rep.title == "run A" and rep.section_names == ["Results"]
    page = rep.to_html()
    assert "<caption>AUROC ↑</caption>" in page
    assert "<td class='best'><strong>95.0</strong></td>" in page
    assert "<td class='flag'>12.5 †</td>" in page and "<td>80.0 ± 1.2</td>" in page
    assert "<td class='text'>msp</td>" in page and "<ul><li>one</li><li>two</li></ul>" in page
    assert "class='callout'" in page and "<pre><code>code &lt;x&gt;</code></pre>" in page
    assert "<p>Intro line more.</p>" in page
    with_title = HtmlReport.from_markdown("# T\n\n## A\n\nx\n\n## B\n\ny")
    assert with_title.title == "T" and with_title.section_names == ["A", "B"]


def test_column_groups_one_html_table_split_markdown():
    cols = pd.MultiIndex.from_tuples([("rotate", "1"), ("rotate", "2"), ("blur", "1")])
    df = pd.DataFrame([[0.5, 0.9, 0.7], [0.6, 0.4, 0.8]], index=["a", "b"], columns=cols)
    rep = HtmlReport("t").section("s").table(df, caption="AUROC", best="max", percent=True,
                                             flag_cells=[("b", ("rotate", "2"))], index_name="detector")
    page = rep.to_html()
    assert "colspan='2' class='group gs'>rotate<" in page and "colspan='1' class='group gs'>blur<" in page
    assert page.count("<table>") == 1 and "<td class='flag'>40.0</td>" in page
    md = rep.to_markdown()
    assert "**AUROC: rotate**" in md and "**AUROC: blur**" in md
    rotate = md.split("**AUROC: rotate**")[1].split("**AUROC: blur**")[0]
    assert "| b        | **60.0** |   40.0 † |" in rotate and "| a        |     50.0 | **90.0** |" in rotate


def test_preformatted_number_cells_are_right_aligned_without_markup():
    df = pd.DataFrame({"site": ["A", "B"], "FAR": ["3.6 ± 0.5", "6.6 ± 0.7"], "acc.": ["98.3", "91.7"]})
    html = table_html(df, index=False)  # the sites demo's tables: strings formatted by the demo
    assert "<td class='text'>A</td>" in html
    assert "<td>3.6 ± 0.5</td>" in html and "<td>98.3</td>" in html  # were class='text' (left-aligned)


def test_more_bad_inputs_found_by_review(tmp_path):
    df = pd.DataFrame({"a": [1.0]})
    cases = [
        (lambda: HtmlReport("t").table(df, digits=-1), "digits"),  # was: ValueError from the format spec
        (lambda: HtmlReport("t").write(tmp_path), "cannot write the report"),  # was: IsADirectoryError
        (lambda: HtmlReport("t").settings([1, 2]), "mapping"),  # was: AttributeError
        (lambda: HtmlReport("t").figures([], ["lost caption"]), "captions"),  # was: silently dropped
        (lambda: HtmlReport.from_markdown(None), "str"),  # was: an empty report
    ]
    for fn, msg in cases:
        with pytest.raises(OODLensError, match=msg):
            fn()
    assert "<td>1</td>" in table_html(df, digits=np.int64(0))


def test_pipes_and_line_breaks_in_cells_keep_the_markdown_table_intact():
    from oodlens.bench.reports.markdown_blocks import parse_markdown
    from oodlens.bench.reports.tables import markdown_table

    df = pd.DataFrame({"name": ["a|b", "two\nlines"], "v": [0.5, 0.25]}, index=["x", "y"])
    md = markdown_table(df, index_name="row")
    assert all(line.count("|") - line.count("\\|") == 4 for line in md.splitlines())  # 3 columns on every line
    _, blocks = parse_markdown(md)
    table = next(p for k, p in blocks if k == "table")[0]
    assert table["name"].tolist() == ["a|b", "two lines"]  # was: the pipe split the row into an extra column
    assert "<td class='text'>a|b</td>" in HtmlReport.from_markdown(md).to_html()
