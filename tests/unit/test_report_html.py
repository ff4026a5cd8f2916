"""report.html, the JSON schema, the Pareto front, disagreement examples and run comparisons:
values from fake manifests with known numbers (test_report's helpers), never a real model."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from test_report import (
    ACCURACY,
    LABELS,
    P50,
    PEARSON,
    device_results,
    fake_metrics,
    latency,
    regression_metrics,
    write_run,
)

from kdedge.data.dataset import TaskData, TaskSplit
from kdedge.export.classifier import disagreements
from kdedge.report import charts
from kdedge.report.compare import build_comparison, build_report_from_run
from kdedge.report.html import CHARTS
from kdedge.report.render import render, render_comparison
from kdedge.report.targets import add_bench
from kdedge_cli import main as cli_main

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "kdedge" / "report" /
                     "schema.json").read_text(encoding="utf-8"))
HOSTILE = "<script>alert('x')</script> & a|b *bold* `tick` [x](http://y)"


def validate(data: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(data)


def with_disagreements(metrics: dict[str, Any], text: str = "a great film",
                       labels: list[str] = LABELS) -> dict[str, Any]:
    metrics["export"]["disagreements"] = {
        "split": "test", "examples_total": 100, "count": 4,
        "examples": [{"index": 7, "text": text, "text_pair": None, "gold": labels[1],
                      "teacher": labels[1], "teacher_confidence": 0.95, "student": labels[0],
                      "student_confidence": 0.7}]}
    return metrics


def test_user_strings_are_escaped_in_html_and_markdown(tmp_path: Path) -> None:
    labels = ["plain", HOSTILE]
    metrics = with_disagreements(fake_metrics(ACCURACY, P50, labels=labels), HOSTILE, labels)
    metrics["teacher"]["model"] = HOSTILE
    metrics["distill"]["recipe"] = "<b>kd</b>"
    data = build_report_from_run(write_run(tmp_path, metrics))
    html, md = render("html", data), render("md", data)

    assert "<script" not in html.lower()  # the page has no script of its own either
    assert "<b>kd</b>" not in html and "&lt;b&gt;kd&lt;/b&gt;" in html
    escaped = ("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; a|b *bold* `tick` "
               "[x](http://y)")
    assert html.count(escaped) >= 4  # label rows, the disagreement text, gold, teacher model
    assert "http://y" not in re.findall(r'(?:href|src)="([^"]*)"', html)

    assert "<script" not in md and "<b>" not in md
    md_escaped = (r"&lt;script&gt;alert('x')&lt;/script&gt; &amp; a\|b \*bold\* \`tick\` "
                  r"\[x\](http://y)")
    assert md.count(md_escaped) >= 4
    assert HOSTILE not in md and HOSTILE not in html


def test_report_json_validates_against_its_schema(tmp_path: Path) -> None:
    metrics = with_disagreements(fake_metrics(ACCURACY, P50))
    metrics["distill"]["history"][0]["phase"] = "warmup"
    full = build_report_from_run(write_run(tmp_path / "full", metrics))
    validate(full)
    validate(json.loads(render("json", full)))
    validate(build_report_from_run(write_run(tmp_path / "regression", regression_metrics(PEARSON))))
    validate(build_report_from_run(write_run(tmp_path / "empty", {})))  # every stage missing

    swept = fake_metrics(ACCURACY, P50)  # a thread sweep, and a device added with --add-bench
    swept["bench"]["threads"] = [2, 4]
    for name, entry in swept["bench"]["models"].items():
        entry["latency"].append(latency(P50[name] * 1.5, 1, threads=2))
    run = write_run(tmp_path / "swept", swept)
    device = tmp_path / "pi5.json"
    device.write_text(json.dumps(device_results()))
    add_bench(run, device)
    data = build_report_from_run(run)
    assert len(data["benchmark"]["sweep"]) == 12 and data["added_targets"][0]["target"] == "pi5"
    validate(data)

    broken = json.loads(json.dumps(full))
    broken["artifacts"][0]["latency"]["1"]["p50_ms"] = "fast"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    broken = {k: v for k, v in full.items() if k != "pareto"}
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate({**full, "undocumented": 1})


def test_schema_keys_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "report.md").read_text(encoding="utf-8")
    for key in SCHEMA["required"]:
        assert f"`{key}`" in doc, key
    for key in SCHEMA["$defs"]["artifact"]["properties"]:
        assert f"`{key}`" in doc, key


def test_the_schema_names_every_task_kind() -> None:
    from kdedge import tasks

    assert sorted(SCHEMA["properties"]["task"]["enum"]) == sorted(tasks.names())
    patterns = {p for p in json.dumps(SCHEMA).split('"') if p.startswith("^(accuracy|")}
    assert len(patterns) == 1  # one list of metric names, written alike wherever it is used
    (pattern,) = patterns
    for name in tasks.names():  # and every kind's metrics are in it
        assert all(re.fullmatch(pattern, metric) for metric in tasks.get(name).metrics), name


def test_pareto_front_per_target(tmp_path: Path) -> None:
    metrics = fake_metrics(ACCURACY, P50)
    metrics["bench"]["models"]["student-onnx@cuda"] = {
        **metrics["bench"]["models"]["student-onnx"], "latency": [latency(50.0, 1)]}
    pareto = build_report_from_run(write_run(tmp_path, metrics))["pareto"]
    assert pareto["batch_size"] == 1 and pareto["metric"] == "accuracy"
    front = {p["artifact"]: p["on_front"] for p in pareto["points"]}
    # teacher-pytorch (12 ms, 0.90) is beaten by teacher-onnx (10 ms, 0.90); the slow GPU row
    # is alone on its target, so nothing on the CPU can dominate it
    assert front == {"teacher-pytorch": False, "teacher-onnx": True, "student-onnx": True,
                     "student-int8": True, "student-onnx@cuda": True}
    slow_int8 = fake_metrics(ACCURACY, {**P50, "student-int8": 20.0})
    pareto = build_report_from_run(write_run(tmp_path / "b", slow_int8))["pareto"]
    assert [p["artifact"] for p in pareto["points"] if p["on_front"]] == ["teacher-onnx",
                                                                           "student-onnx"]


def _task(labels: list[float] | list[int], kind: str = "classification") -> TaskData:
    texts = [f"text {i}" for i in range(len(labels))]
    split = TaskSplit(texts, np.asarray(labels))
    names = ["score"] if kind == "regression" else ["neg", "pos"]
    return TaskData(names, {"train": split, "validation": split, "test": split}, kind)


def test_export_keeps_the_teachers_most_confident_disagreements() -> None:
    task = _task([0, 1, 1, 0, 1])
    teacher = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0], [5.0, 0.0], [0.0, 2.0]])
    student = np.array([[2.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    found = disagreements(task, teacher, student, keep=2)
    assert found["count"] == 3 and found["examples_total"] == 5
    assert [e["index"] for e in found["examples"]] == [3, 1]  # most confident teacher first
    first = found["examples"][0]
    assert (first["text"], first["gold"], first["teacher"], first["student"]) == (
        "text 3", "neg", "neg", "pos")
    assert first["teacher_confidence"] == pytest.approx(np.exp(5) / (np.exp(5) + 1))
    json.dumps(found, allow_nan=False)

    gaps = disagreements(_task([1.0, 2.0, 3.0], "regression"), np.array([[1.0], [2.0], [3.0]]),
                         np.array([[1.5], [0.0], [3.1]]), keep=2)
    assert [e["index"] for e in gaps["examples"]] == [1, 0]
    assert gaps["examples"][0]["gap"] == pytest.approx(2.0) and gaps["count"] is None


def test_html_shows_every_section_with_the_same_numbers_as_markdown(tmp_path: Path) -> None:
    data = build_report_from_run(write_run(tmp_path, with_disagreements(fake_metrics(ACCURACY, P50))))
    html, md = render("html", data), render("md", data)
    for chart in CHARTS:
        assert f'data-chart="{chart}"' in html
    summary = data["recommendation"]["summary"]
    assert summary in md and summary in html  # no HTML-special character in it
    for text in ("96.7%", "5.00×", "4.00×", "4 of 100", "(4.0%)", "95.0%", "70.0%"):
        assert text in html, text
    assert "4 of 100 test examples (4.0%)" in md
    for heading in ("Confusion matrices (test)", "Where teacher and student disagree",
                    "Quantization", "Reproducibility", "Environment"):
        assert heading in html and heading in md
    assert "<code>fp00000000000002</code>" in html  # the distill stage's fingerprint
    assert not re.search(r"\b(src|href)=", html)  # nothing to fetch, nothing to follow


def test_chart_axes_and_empty_charts() -> None:
    assert charts.nice_ticks(0, 9.3) == [0, 5, 10]
    assert charts.nice_ticks(0, 12.5) == [0, 5, 10, 15]
    assert charts.nice_ticks(0.86, 0.91) == pytest.approx([0.86, 0.88, 0.9, 0.92])
    empty = charts.scatter("q", [], title="T", x_label="x (ms)", y_label="y")
    assert "No artifact has both" in empty and "<circle" not in empty
    svg = charts.bars("size", [("a<b", 2.0, "2.0 MiB")], title="Size", x_label="size (MiB)")
    assert "a&lt;b" in svg and "size (MiB)" in svg and 'data-chart="size"' in svg


def test_comparison_of_two_runs(tmp_path: Path) -> None:
    faster = {name: ms / 2 for name, ms in P50.items()}
    a = write_run(tmp_path / "recipe-a", fake_metrics(ACCURACY, P50))
    b = write_run(tmp_path / "recipe-b", fake_metrics({**ACCURACY, "student-int8": 0.88}, faster))
    data = build_comparison([("recipe-a", build_report_from_run(a)),
                             ("recipe-b", build_report_from_run(b))])
    assert data["baseline"] == "recipe-a" and data["primary_metric"] == "accuracy"
    second = data["runs"][1]
    assert second["recommended"] == "student-int8"
    assert second["vs_baseline"]["speedup"] == pytest.approx(2.0)
    assert second["vs_baseline"]["score_delta"] == pytest.approx(0.01)
    assert data["runs"][0]["vs_baseline"]["speedup"] == pytest.approx(1.0)
    md = render_comparison("md", data)
    assert "| recipe-b | kd | 3 | cpu | student-int8 |" in md and "2.00×" in md

    out = tmp_path / "cmp"
    sys_argv = ["kdedge", "report", str(a), str(b), "--out", str(out)]
    code = _cli(sys_argv)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == data
    assert _cli(["kdedge", "report", str(a), str(b), "--add-bench", str(a / "x.json")]) == 2
    assert _cli(["kdedge", "report", str(a), str(tmp_path)]) == 2  # not a run


def _cli(argv: list[str]) -> int:
    old = sys.argv
    sys.argv = argv
    try:
        cli_main.main()
    except SystemExit as exit_info:
        return int(exit_info.code or 0)
    finally:
        sys.argv = old
    return 0


def test_a_regression_report_renders_its_own_metric_and_score_gaps(tmp_path: Path) -> None:
    metrics = regression_metrics(PEARSON)
    metrics["export"]["disagreements"] = {
        "split": "test", "examples_total": 100, "count": None,
        "examples": [{"index": 3, "text": "a", "text_pair": "b", "gold": 4.5, "teacher": 4.25,
                      "student": 2.0, "gap": 2.25}]}
    data = build_report_from_run(write_run(tmp_path, metrics))
    validate(data)
    assert data["disagreements"]["rate"] is None
    assert {p["artifact"]: p["on_front"] for p in data["pareto"]["points"]}["student-int8"]
    html, md = render("html", data), render("md", data)
    assert "Test Pearson vs latency (batch 1)" in html and "test Pearson</text>" in html
    assert "<td>4.2500</td><td>2.0000</td><td>2.2500</td>" in html
    assert "| a / b | 4.5 | 4.2500 | 2.0000 | 2.2500 |" in md
    assert "Confusion" not in html and "Confusion" not in md
