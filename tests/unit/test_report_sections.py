"""The report's sections are built once, as data, and both report.md and report.html are
rendered from that one list: a change to a section's data shows in both files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_report import ACCURACY, P50, fake_metrics, write_run

from kdedge.report import builders
from kdedge.report.builders import build_sections
from kdedge.report.compare import build_report_from_run
from kdedge.report.render import render
from kdedge.report.sections import Code, Section, Table, Text
from kdedge.report.stage import write_reports

EMBEDDING = "<embedding> & recall|k"


def _report(tmp_path: Path) -> dict[str, Any]:
    return build_report_from_run(write_run(tmp_path / "run", fake_metrics(ACCURACY, P50)))


def _written(data: dict[str, Any], folder: Path, **options: Any) -> tuple[str, str]:
    folder.mkdir()
    write_reports(data, folder, ["md", "html"], **options)
    return ((folder / "report.md").read_text(encoding="utf-8"),
            (folder / "report.html").read_text(encoding="utf-8"))


def test_a_changed_value_shows_in_both_files(tmp_path: Path) -> None:
    data = _report(tmp_path)
    md, html = _written(data, tmp_path / "before")
    assert "- seed: 7\n" in md and "<dt>seed</dt><dd>7</dd>" in html
    assert "8675309" not in md and "8675309" not in html

    data["reproducibility"]["seed"] = 8675309  # the value reproducibility() reads
    data["reproducibility"]["stages"]["distill"]["fingerprint"] = "fp_changed"
    md, html = _written(data, tmp_path / "after")
    assert "- seed: 8675309\n" in md and "<dt>seed</dt><dd>8675309</dd>" in html
    assert "| distill | fp\\_changed | complete |" in md
    assert '<td class="text">distill</td><td class="text"><code>fp_changed</code></td>' in html


def test_a_changed_builder_output_shows_in_both_files(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = _report(tmp_path)

    def parity(report: dict[str, Any]) -> Section:
        built = builders.parity(report)
        table = next(b for b in built.blocks if isinstance(b, Table))
        rows = tuple((row[0], "moved/" + row[1], *row[2:]) for row in table.rows)
        return Section(built.id, "Export parity, checked twice",
                       (Text("Both ONNX files were re-checked."),
                        Table(table.header, rows, table.text_cols)))

    monkeypatch.setattr(builders, "BUILDERS", tuple(parity if b is builders.parity else b
                                                    for b in builders.BUILDERS))
    md, html = _written(data, tmp_path / "out")
    assert "## Export parity, checked twice\n\nBoth ONNX files were re-checked.\n" in md
    assert "| student | moved/student | 17 | 2.00e-06 |" in md
    assert ('<section id="parity">\n<h2>Export parity, checked twice</h2><div class="body">'
            "<p>Both ONNX files were re-checked.</p>") in html
    assert ('<td class="text">student</td><td class="text">moved/student</td><td>17</td>'
            "<td>2.00e-06</td>") in html


def _embedding(report: dict[str, Any]) -> Section | None:
    """A task kind's own section: present only when its data is."""
    found = report.get("embedding_demo")
    if not found:
        return None
    return Section("embedding", "Embedding quality", (
        Text(f"Recall at {found['k']} on {EMBEDDING}."),
        Table(("Artifact", "Recall@k", "Index"),
              tuple((name, f"{value:.4f}", Code(f"{name}.faiss"))
                    for name, value in found["recall"].items()))))


def test_a_caller_adds_a_section_to_both_files(tmp_path: Path) -> None:
    data = _report(tmp_path)
    assert [s.id for s in build_sections(data, [_embedding])] == [
        s.id for s in build_sections(data)]  # no data: no section
    assert render("md", data, [_embedding]) == render("md", data)

    data["embedding_demo"] = {"k": 10, "recall": {"student-int8": 0.8125}}
    ids = [s.id for s in build_sections(data, [_embedding])]
    assert ids.index("embedding") == ids.index("parity") - 1  # before the export evidence
    assert [s.id for s in build_sections(data, [_embedding], before="nowhere")][-1] == "embedding"

    md, html = _written(data, tmp_path / "out", extra_builders=[_embedding])
    assert "## Embedding quality\n\nRecall at 10 on &lt;embedding&gt; &amp; recall\\|k.\n" in md
    assert "| student-int8 | 0.8125 | student-int8.faiss |" in md
    assert md.index("## Embedding quality") < md.index("## Export parity")
    assert ('<section id="embedding">\n<h2>Embedding quality</h2><div class="body"><p>Recall at '
            "10 on &lt;embedding&gt; &amp; recall|k.</p>") in html
    assert ('<td class="text">student-int8</td><td>0.8125</td><td><code>student-int8.faiss</code>'
            "</td>") in html
    assert html.index('id="embedding"') < html.index('id="parity"')
    assert render("json", data, [_embedding]) == render("json", data)  # the data, unchanged


def test_every_section_of_the_page_is_a_section_of_the_markdown(tmp_path: Path) -> None:
    data = _report(tmp_path)
    md, html = render("md", data), render("html", data)
    built = build_sections(data)
    assert [s.id for s in built] == [
        "verdict", "charts", "artifacts", "pareto", "latency", "per-class", "confusion",
        "parity", "quantization", "training", "data", "environment", "reproducibility"]
    for section in built:
        assert f'<section id="{section.id}"' in html
        # Markdown has no pictures, so the charts section is the page's alone
        assert (f"## {section.title}\n" in md) == (section.id != "charts"), section.id


def test_generation_sections_and_the_lifelong_stream_in_both_files(tmp_path: Path) -> None:
    data = _report(tmp_path)
    assert "generation" not in [s.id for s in build_sections(data)]  # a classifier: none
    for row in data["artifacts"]:
        if row["name"] == "student-int8":
            row["latency"]["1"].update(tokens_per_s=1234.5, time_to_first_token_ms=3.25)
    data["generations"] = {"split": "test", "examples": [
        {"index": 0, "source": "le chat", "gold": "the cat", "teacher-onnx": "the cat",
         "student-int8": "a <cat>"}]}
    data["training"]["distill"]["lifelong"] = {
        "stream": ["first", "second"],
        "after_step": [{"step": 1, "task": "first", "replayed": 0,
                        "test_rougeL": {"first": 10.0, "second": 1.0}}],
        "teachers_test_rougeL": {"first": 11, "second": 13}}
    md, html = _written(data, tmp_path / "out")

    assert "| student-int8 | 1,234.5 |" not in md  # tokens/s is a rate, not a count
    assert "| student-int8 | 1234.5 | 3.25 | 2.00 | n/a | n/a | 20.00 |" in md
    assert ('<td class="text">student-int8</td><td>1234.5</td><td>3.25</td><td>2.00</td>'
            "<td>n/a</td>") in html
    assert "| le chat | the cat | the cat | a &lt;cat&gt; |" in md
    assert ('<td class="text wrap">le chat</td><td class="text">the cat</td>'
            '<td class="text">the cat</td><td class="text">a &lt;cat&gt;</td>') in html
    assert "#### The lifelong stream" in md
    assert "| after step 1 (first, 0 replayed) | 10.00 | 1.00 |" in md
    assert "| each task's teacher | 11.00 | 13.00 |" in md
    assert "<h4>The lifelong stream</h4>" in html
    assert ('<td class="text">each task&#39;s teacher</td><td>11.00</td><td>13.00</td>') in html
