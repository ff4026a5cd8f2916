"""Report formats: each turns the report data from compare.py into the text of one file.

Renderers only format: every number they print was computed in compare.py, so report.json
and report.md always agree. A new format is one function registered in FORMATS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kdedge.registry import Registry
from kdedge.report.formatting import (
    NA,
    dig,
    fmt_bool,
    fmt_bytes,
    fmt_int,
    fmt_metric,
    fmt_metric_delta,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_processes,
    fmt_ratio,
    fmt_sci,
    metric_name,
    metric_title,
)

Renderer = Callable[[Mapping[str, Any]], str]
SCORE_STATS = ("mean", "std", "min", "max")  # the data stage's label_stats of a regression task
FORMATS: Registry[Renderer] = Registry("report format")
COMPARISON_FORMATS: Registry[Renderer] = Registry("comparison format")


def render(fmt: str, data: Mapping[str, Any]) -> str:
    """The text of report.<fmt>; an unknown format names the known ones."""
    return FORMATS.get(fmt)(data)


def file_name(fmt: str) -> str:
    return f"report.{fmt}"


def render_comparison(fmt: str, data: Mapping[str, Any]) -> str:
    """The text of a several-run comparison file (compare.build_comparison's data)."""
    return COMPARISON_FORMATS.get(fmt)(data)


@COMPARISON_FORMATS.register("json")
@FORMATS.register("json")
def render_json(data: Mapping[str, Any]) -> str:
    """The report data as is: the machine-readable report is the data itself."""
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Markdown

# Characters that change meaning anywhere in a line or table cell. `<`, `>` and `&` become
# entities so no label can open an HTML tag; the rest are backslash-escaped.
_MD_ESCAPES = {c: "\\" + c for c in "\\`*_{}[]|~#$"} | {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LEADING_BLOCK = re.compile(r"^(\d+)([.)])|^([-+=])")  # would start a list or heading


def escape_md(value: Any, *, line_start: bool = False) -> str:
    """Text from a run (labels, paths, model names) as inert Markdown, on one line.

    line_start: the text opens a line, so a leading "1." or "-" must not start a list. Only
    then, so versions like "3.11" stay readable inside cells and bullets.
    """
    if value is None:
        return NA
    text = " ".join(str(value).split())  # newlines would break a table row
    text = "".join(_MD_ESCAPES.get(c, c) for c in text)
    if not line_start:
        return text
    return _LEADING_BLOCK.sub(lambda m: (f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}"), text,
                              count=1)


def _cell(value: Any) -> str:
    """Any plain value as a table cell: numbers formatted, strings escaped."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return fmt_bool(value)
    if isinstance(value, int):
        return fmt_int(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (Mapping, list)):
        return escape_md(json.dumps(value, ensure_ascii=False))
    return escape_md(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    """A GitHub table; cells arrive formatted and escaped."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _bullets(pairs: Iterable[tuple[str, str]]) -> list[str]:
    return [f"- {key}: {value}" for key, value in pairs]



def _metrics(data: Mapping[str, Any]) -> list[str]:
    """The task's quality metrics, primary first (reports written before regression: accuracy)."""
    return list(data.get("quality_metrics") or ["accuracy", "macro_f1"])


@FORMATS.register("md")
def render_markdown(data: Mapping[str, Any]) -> str:
    """The report for a person deciding what to ship: the verdict first, the evidence after."""
    lines = ["# kdedge deployment report", ""]
    for section in (_verdict, _notes, _artifacts, _pareto, _latency, _generation, _per_class,
                    _confusion, _disagreements, _generations, _parity, _quantization, _training,
                    _data, _environment, _reproducibility):
        part = section(data)
        if part:
            lines += [*part, ""]
    return "\n".join(lines).rstrip() + "\n"


def _verdict(data: Mapping[str, Any]) -> list[str]:
    rec = data.get("recommendation") or {}
    name = rec.get("artifact")
    if name is None:
        title = "**No recommendation**"
    elif rec.get("fallback"):
        floor = metric_name(_metrics(data)[0])
        title = f"**Recommended: {escape_md(name)}** (fallback: no student met the {floor} floor)"
    else:
        title = f"**Recommended: {escape_md(name)}**"
    lines = ["## Verdict", "", title, "", escape_md(rec.get("summary"), line_start=True), ""]
    lines += [f"- {escape_md(reason)}" for reason in rec.get("reasons") or []]
    lines += ["", f"Rule: {escape_md(rec.get('rule'))}"]
    return lines


def _notes(data: Mapping[str, Any]) -> list[str]:
    notes = data.get("notes") or []
    return ["## Warnings", "", *[f"- {escape_md(note)}" for note in notes]] if notes else []


def _artifacts(data: Mapping[str, Any]) -> list[str]:
    recommended = dig(data, "recommendation", "artifact")
    ref = escape_md(data.get("reference"))
    metrics = _metrics(data)
    header = ["Artifact", "Runtime", "Precision", f"Test {metric_name(metrics[0])}",
              *map(metric_title, metrics[1:]),
              f"Retained vs {ref}", "Size", f"Size ratio vs {ref}", "Parameters",
              "Load peak RSS", "Inference peak RSS", f"Memory ratio vs {ref}"]
    rows = []
    for row in data.get("artifacts") or []:
        ratios = row.get("vs_reference") or {}
        memory = row.get("memory") or {}
        mark = " (recommended)" if row["name"] == recommended else ""
        rows.append([
            escape_md(row["name"]) + mark,
            escape_md(row.get("runtime")),
            escape_md(row.get("precision")),
            *[_value(dig(row, "test", m), m, metrics[0]) for m in metrics],
            fmt_pct(row.get(f"retained_{metrics[0]}")),
            fmt_bytes(row.get("size_bytes")),
            fmt_ratio(ratios.get("size_ratio")),
            fmt_int(row.get("parameters")),
            fmt_bytes(memory.get("load_peak_rss_bytes")),
            fmt_bytes(memory.get("inference_peak_rss_bytes")),
            fmt_ratio(ratios.get("memory_ratio")),
        ])
    return ["## Artifacts", "",
            f"Quality is on the test split, each artifact through its own runtime. Ratios read "
            f"{ref} / artifact, so above 1 is better. Size counts what is needed to run (bench), "
            "else the model file alone.", "", *_table(header, rows)]


def _latency(data: Mapping[str, Any]) -> list[str]:
    sizes = [str(bs) for bs in data.get("batch_sizes") or []]
    bench = data.get("benchmark") or {}
    ref = escape_md(data.get("reference"))
    lines = ["## Latency", ""]
    if not sizes:
        return [*lines, f"No benchmark numbers in this run ({NA})."]
    lines += [f"Milliseconds per batch at sequence length {fmt_int(bench.get('sequence_length'))} "
              f"with {fmt_int(bench.get('threads'))} threads; speed-up = {ref} p50 / artifact "
              "p50 at the same batch size.", ""]
    header = ["Artifact"]
    for bs in sizes:
        header += [f"p50 @{bs}", f"p90 @{bs}", f"p99 @{bs}", f"samples/s @{bs}",
                   f"speed-up @{bs}"]
    rows = []
    for row in data.get("artifacts") or []:
        cells = [escape_md(row["name"])]
        for bs in sizes:
            stats = dig(row, "latency", bs) or {}
            cells += [fmt_num(stats.get("p50_ms")), fmt_num(stats.get("p90_ms")),
                      fmt_num(stats.get("p99_ms")),
                      fmt_num(stats.get("throughput_samples_per_s"), 1),
                      fmt_ratio(dig(row, "vs_reference", "speedup", bs))]
        rows.append(cells)
    return [*lines, *_table(header, rows), *_sweep(bench.get("sweep") or [])]


def generation_rows(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the generation speed table (empty when no artifact generated)."""
    sizes = [str(bs) for bs in data.get("batch_sizes") or []]
    rows = []
    for row in data.get("artifacts") or []:
        points = [dig(row, "latency", bs) or {} for bs in sizes]
        if not any(p.get("tokens_per_s") is not None for p in points):
            continue
        cells = [row["name"]]
        for p in points:
            cells += [fmt_num(p.get("tokens_per_s"), 1), fmt_num(p.get("time_to_first_token_ms")),
                      fmt_num(p.get("p50_ms"))]
        rows.append(cells)
    header = ["Artifact"]
    for bs in sizes:
        header += [f"tokens/s @{bs}", f"first token ms @{bs}", f"ms per sequence @{bs}"]
    return (header, rows) if rows else ([], [])


def _generation(data: Mapping[str, Any]) -> list[str]:
    header, rows = generation_rows(data)
    if not rows:
        return []
    return ["## Generation speed", "", "Greedy decoding of a fixed number of new tokens per "
            "sequence (the bench's setting), p50 over runs; time to first token is a generate "
            "call of one token.", "",
            *_table(header, [[escape_md(c) for c in r] for r in rows])]


def generation_examples(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the example generations: source, gold, then each model's output."""
    found = data.get("generations") or {}
    examples = found.get("examples") or []
    if not examples:
        return [], []
    models = [k for k in examples[0] if k not in ("index", "source", "gold")]
    header = ["Source", "Gold", *models]
    return header, [[str(e.get(k, "")) for k in ("source", "gold", *models)] for e in examples]


def _generations(data: Mapping[str, Any]) -> list[str]:
    header, rows = generation_examples(data)
    if not rows:
        return []
    return ["## Example generations (test)", "", "The first test sources (cut), their gold "
            "target, and each ONNX model's greedy output.", "",
            *_table(header, [[escape_md(c) for c in r] for r in rows])]


def _sweep(points: list[Mapping[str, Any]]) -> list[str]:
    """Every point of a thread-count / sequence-length sweep, one row each."""
    if not points:
        return []
    header = ["Artifact", "threads", "sequence length", "batch", "p50 ms", "p95 ms", "samples/s"]
    rows = [[escape_md(p["artifact"]), fmt_int(p.get("threads")),
             fmt_int(p.get("sequence_length")), fmt_int(p.get("batch_size")),
             fmt_num(p.get("p50_ms")), fmt_num(p.get("p95_ms")),
             fmt_num(p.get("throughput_samples_per_s"), 1)] for p in points]
    return ["", "### Sweep", "", "Every measured point of the grid; the table above is its first "
            "thread count and sequence length.", "", *_table(header, rows)]


def _per_class(data: Mapping[str, Any]) -> list[str]:
    per_class = data.get("per_class")
    if not per_class:
        return []
    names = list(per_class["f1"])
    support = per_class.get("support") or []
    rows = []
    for i, label in enumerate(per_class["labels"]):
        cells = [escape_md(label), fmt_int(support[i] if i < len(support) else None)]
        for name in names:
            values = per_class["f1"][name]
            cells.append(fmt_num(values[i] if i < len(values) else None, 4))
        rows.append(cells)
    return ["## Per-class F1 (test)", "",
            *_table(["Label", "Support", *[escape_md(n) for n in names]], rows)]


def _pareto(data: Mapping[str, Any]) -> list[str]:
    pareto = data.get("pareto")
    if not pareto:
        return []
    metric = pareto["metric"]
    rows = [[escape_md(p["artifact"]), escape_md(p["target"]), fmt_num(p["p50_ms"]),
             fmt_metric(p[metric], metric), fmt_bool(p.get("on_front"))]
            for p in pareto.get("points") or []]
    return ["## Quality against latency", "",
            f"Batch {fmt_int(pareto.get('batch_size'))}. On the Pareto front: no other artifact "
            "on the same target is both faster and better.", "",
            *_table(["Artifact", "Target", "p50 ms", f"Test {metric_name(metric)}",
                     "Pareto front"], rows)]


def _confusion(data: Mapping[str, Any]) -> list[str]:
    """Per-class precision and recall, and each artifact's confusion matrix (rows: gold)."""
    labels = dig(data, "per_class", "labels") or []
    lines: list[str] = []
    rows = []
    own = [row for row in data.get("artifacts") or []  # MODEL@TARGET scores as MODEL does
           if "@" not in str(row["name"])]
    for row in own:
        pc = dig(row, "test", "per_class") or {}
        rows += [[escape_md(row["name"]), escape_md(label),
                  *[fmt_num(_at(pc.get(k), i), 4) for k in ("precision", "recall", "f1")]]
                 for i, label in enumerate(labels) if pc]
    if rows:
        lines += ["## Per-class precision and recall (test)", "",
                  *_table(["Artifact", "Label", "Precision", "Recall", "F1"], rows), ""]
    matrices = [(row["name"], dig(row, "test", "confusion")) for row in own]
    matrices = [(n, m) for n, m in matrices if isinstance(m, list) and m]
    if matrices:
        lines += ["## Confusion matrices (test)", "", "Rows are gold labels, columns predictions.",
                  ""]
        for name, matrix in matrices:
            names = labels if len(labels) == len(matrix) else [str(i) for i in range(len(matrix))]
            lines += [f"### {escape_md(name)}", "",
                      *_table(["gold \\ predicted", *[escape_md(n) for n in names]],
                              [[escape_md(names[i]), *[fmt_int(v) for v in line]]
                               for i, line in enumerate(matrix)]), ""]
    return lines[:-1] if lines else []


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) and i < len(values) else None


def _disagreements(data: Mapping[str, Any]) -> list[str]:
    found = data.get("disagreements")
    if not found:
        return []
    examples = found.get("examples") or []
    if any(e.get("gap") is not None for e in examples):
        intro = ("The test examples with the largest gap between the teacher's and the "
                 "student's ONNX scores.")
        rows = [[_example_text(e), _cell(e.get("gold")), fmt_num(e.get("teacher"), 4),
                 fmt_num(e.get("student"), 4), fmt_num(e.get("gap"), 4)] for e in examples]
        header = ["Text", "Gold", "Teacher", "Student", "Gap"]
    else:
        intro = (f"The teacher's and the student's ONNX models disagree on "
                 f"{fmt_int(found.get('count'))} of {fmt_int(found.get('examples_total'))} test "
                 f"examples ({fmt_pct(found.get('rate'))}); below, those the teacher was most "
                 "confident about.")
        rows = [[_example_text(e), escape_md(e.get("gold")),
                 f"{escape_md(e.get('teacher'))} ({fmt_pct(e.get('teacher_confidence'))})",
                 f"{escape_md(e.get('student'))} ({fmt_pct(e.get('student_confidence'))})"]
                for e in examples]
        header = ["Text", "Gold", "Teacher (confidence)", "Student (confidence)"]
    return ["## Where teacher and student disagree", "", intro, "", *_table(header, rows)]


def _example_text(example: Mapping[str, Any]) -> str:
    pair = example.get("text_pair")
    return escape_md(example.get("text")) + ("" if pair is None else f" / {escape_md(pair)}")


def _parity(data: Mapping[str, Any]) -> list[str]:
    models = dig(data, "export", "models")
    lines = ["## Export parity", ""]
    if not models:
        return [*lines, f"No export in this run ({NA})."]
    metric = _metrics(data)[0]
    rows = [[escape_md(name), escape_md(m.get("path")), fmt_int(m.get("opset")),
             fmt_sci(m.get("max_abs_diff")), fmt_sci(m.get("atol")),
             fmt_bool(m.get("passed"), "pass", "FAIL"), _shapes(m.get("shapes")),
             fmt_metric(m.get(f"test_{metric}"), metric),
             fmt_metric(m.get(f"pytorch_test_{metric}"), metric),
             fmt_metric_delta(m.get(f"{metric}_delta_vs_pytorch"), metric)]
            for name, m in models.items()]
    header = ["Model", "Path", "Opset", "Max abs diff", "atol", "Result", "Shapes (batch×seq)",
              f"ONNX test {metric_name(metric)}", f"PyTorch test {metric_name(metric)}", "Change"]
    return [*lines, *_table(header, rows)]


def _shapes(shapes: Any) -> str:
    """[[1, 16], [8, 64]] as "1×16, 8×64"."""
    if not isinstance(shapes, list) or not shapes:
        return NA
    return ", ".join("×".join(_cell(d) for d in s) if isinstance(s, list) else _cell(s)
                     for s in shapes)


def _joined(values: Any) -> str:
    """A list as "0, 2, 4"; anything else as a cell."""
    return ", ".join(_cell(v) for v in values) if isinstance(values, list) else _cell(values)


def _quantization(data: Mapping[str, Any]) -> list[str]:
    models = dig(data, "quantization", "models")
    lines = ["## Quantization", ""]
    if not models:
        return [*lines, f"No quantized model in this run ({NA})."]
    metrics = _metrics(data)
    primary = metrics[0]
    for name, q in models.items():
        lines += [f"### {escape_md(name)}", "", *_bullets([
            ("source", escape_md(q.get("source"))),
            ("path", escape_md(q.get("path"))),
            ("mode", escape_md(q.get("mode"))),
            ("preset", escape_md(q.get("preset"))),
            ("per-channel", fmt_bool(q.get("per_channel"))),
            ("graph optimization", escape_md(q.get("optimization"))),
            ("MatMuls quantized", f"{fmt_int(q.get('matmul_int8'))} of "
                                  f"{fmt_int(q.get('matmul_total'))}"),
            ("validation gate", _gate_cell(q.get("gate"))),
            ("size", f"{fmt_bytes(q.get('fp32_bytes'))} → {fmt_bytes(q.get('bytes'))} "
                     f"({fmt_ratio(q.get('size_ratio'))} smaller)"),
            *[(f"test {metric_name(m)}", f"{_value(q.get(f'fp32_test_{m}'), m, primary)} → "
                                          f"{_value(q.get(f'test_{m}'), m, primary)} "
                                          f"({fmt_metric_delta(q.get(f'{m}_delta'), m)})")
              for m in metrics],
        ]), ""]
        attempts = q.get("attempts") or []
        if len(attempts) > 1:
            lines += ["| attempt | quantization | validation | drop | passed | size | "
                      "batch-1 p50 (in-process) |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {escape_md(a.get('step'))} | {escape_md(a.get('label'))} | "
                      f"{fmt_num(a.get('validation'), 4)} | {fmt_num(a.get('drop'), 4)} | "
                      f"{fmt_bool(a.get('passed'))} | {fmt_bytes(a.get('bytes'))} | "
                      f"{fmt_ms(a.get('batch1_p50_ms'))} |" for a in attempts]
            lines.append("")
    return lines[:-1]


def _gate_cell(gate: Mapping[str, Any] | None) -> str:
    if not gate or gate.get("passed") is None:
        return "off"
    if gate.get("passed"):
        return (f"passed (max drop {escape_md(gate.get('max_drop'))}"
                + (", after a fallback)" if gate.get("fallback_used") else ")"))
    return f"FAILED: {escape_md(gate.get('reason'))}"


def _value(value: float | None, metric: str, primary: str) -> str:
    """The primary metric as the report prints it everywhere; the others as plain numbers."""
    return fmt_metric(value, metric) if metric == primary else fmt_num(value, 4)


def _history(history: list[Mapping[str, Any]], best_epoch: int | None = None,
             metric: str = "accuracy") -> list[str]:
    if not history:
        return [f"No per-epoch history ({NA})."]
    last_phase = history[-1].get("phase")  # best_epoch counts within the last phase
    rows = [[_cell(h.get("epoch")) + (" (best)" if h.get("epoch") == best_epoch
                                       and h.get("phase") == last_phase else ""),
             fmt_num(h.get("train_loss"), 4), fmt_metric(h.get(f"validation_{metric}"), metric),
             fmt_num(h.get("seconds"), 1), fmt_num(h.get("examples_per_s"), 1)] for h in history]
    header = ["Epoch", "Train loss", f"Validation {metric_name(metric)}", "Seconds",
              "Examples/s"]
    if any("teachers_used" in h for h in history):
        rows = [[*row, " / ".join(fmt_num(u, 2) for u in h.get("teachers_used") or []) or NA]
                for h, row in zip(history, rows, strict=True)]
        header = [*header, "Share of instances per teacher"]
    if any("phase" in h for h in history):
        rows = [[_cell(h.get("phase")), *row] for h, row in zip(history, rows, strict=True)]
        header = ["Phase", *header]
    return _table(header, rows)


def _training(data: Mapping[str, Any]) -> list[str]:
    teacher = dig(data, "training", "teacher")
    distill = dig(data, "training", "distill")
    metric = _metrics(data)[0]
    name = metric_name(metric)
    lines = ["## Training", "", "### Teacher", ""]
    if teacher:
        lines += [*_bullets([
            ("model", escape_md(teacher.get("model"))),
            ("fine-tuned here", fmt_bool(teacher.get("fine_tuned"))),
            ("from cache", fmt_bool(teacher.get("cache_hit"))),
            ("parameters", fmt_int(teacher.get("parameters"))),
            (f"validation / test {name}", _pair(teacher, metric)),
            ("training processes", fmt_processes(teacher.get("processes"))),
            ("stage time", f"{fmt_num(teacher.get('duration_s'), 1)} s"),
        ]), "", *_history(teacher.get("history") or [], metric=metric)]
    else:
        lines.append(f"No teacher stage in this run ({NA}).")
    lines += ["", "### Distillation", ""]
    if distill:
        student = distill.get("student") or {}
        lines += [*_bullets([
            ("recipe", escape_md(distill.get("recipe"))),
            ("temperature / alpha", f"{fmt_num(distill.get('temperature'))} / "
                                    f"{fmt_num(distill.get('alpha'))}"),
            ("student", escape_md(student.get("source"))),
            ("teacher layers kept", _joined(student.get("layers"))),
            ("layers / hidden size", f"{fmt_int(student.get('num_layers'))} / "
                                     f"{fmt_int(student.get('hidden_size'))}"),
            ("parameters", f"{fmt_int(student.get('parameters'))} "
                           f"({fmt_ratio(distill.get('parameter_ratio'))} fewer than the teacher)"),
            ("best epoch", fmt_int(distill.get("best_epoch"))),
            (f"validation / test {name}", _pair(distill, metric)),
            ("reload max abs diff", fmt_sci(distill.get("reload_max_abs_diff"))),
            ("training processes", fmt_processes(distill.get("processes"))),
            ("stage time", f"{fmt_num(distill.get('duration_s'), 1)} s"),
            *[(f"teacher {i}", f"{escape_md(t.get('model'))}, test {name} "
                               f"{fmt_metric(t.get(f'test_{metric}'), metric)}")
              for i, t in enumerate(distill.get("extra_teachers") or [], start=2)],
            *[(f"task {escape_md(task)}", f"{escape_md(metric_name(t.get('metric') or 'score'))} of the "
               f"multi-task student {fmt_num(t.get('test'), 4)} (its teacher "
               f"{fmt_num(t.get('teacher_test'), 4)}), test split")
              for task, t in (distill.get("other_tasks") or {}).items()],
        ]), "", *_history(distill.get("history") or [], distill.get("best_epoch"), metric)]
        header, rows = lifelong_rows(distill.get("lifelong"))
        if rows:
            lines += ["", "#### The lifelong stream", "", "Test ROUGE-L of every task after each "
                      "step of the stream (the model learns the tasks in this order), against "
                      "each task's own teacher and one model trained on every task at once.", "",
                      *_table(header, [[escape_md(c) for c in r] for r in rows])]
    else:
        lines.append(f"No distillation stage in this run ({NA}).")
    return lines


def lifelong_rows(life: Mapping[str, Any] | None) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the lifelong table: a row per stream step, a column per task."""
    if not life or not life.get("after_step"):
        return [], []
    tasks = list(life.get("stream") or [])
    rows = [[f"after step {step.get('step')} ({step.get('task')}, {step.get('replayed')} "
             "replayed)", *[fmt_num(dig(step, "test_rougeL", t), 2) for t in tasks]]
            for step in life["after_step"]]
    rows.append(["each task's teacher", *[fmt_num(dig(life, "teachers_test_rougeL", t), 2)
                                         for t in tasks]])
    if life.get("multitask_test_rougeL"):
        rows.append(["multitask (all tasks at once)",
                     *[fmt_num(dig(life, "multitask_test_rougeL", t), 2) for t in tasks]])
    return ["", *tasks], rows


def _pair(stage: Mapping[str, Any], metric: str) -> str:
    """"validation / test" values of the primary metric."""
    return (f"{fmt_metric(stage.get(f'validation_{metric}'), metric)} / "
            f"{fmt_metric(stage.get(f'test_{metric}'), metric)}")


def _data(data: Mapping[str, Any]) -> list[str]:
    info = data.get("data")
    lines = ["## Data", ""]
    if not info:
        return [*lines, f"No data stage in this run ({NA})."]
    source = info.get("source")
    pairs = ([(escape_md(k), _cell(v)) for k, v in _flatten(source)]
             if isinstance(source, Mapping) else [("source", _cell(source))])
    splits = info.get("splits") or {}
    lines += [*_bullets([*pairs, ("task", escape_md(data.get("task") or "classification")),
                         ("splits", ", ".join(f"{escape_md(k)}: {fmt_int(v)}"
                                              for k, v in splits.items()) or NA),
                         ("labels", fmt_int(info.get("num_labels")))]), ""]
    stats = info.get("label_stats")
    if isinstance(stats, Mapping):  # regression: how the scores spread in each split
        rows = [[escape_md(split), *[fmt_num(dig(values, key), 4) for key in SCORE_STATS]]
                for split, values in stats.items()]
        return [*lines, *_table(["Split", *[f"Score {key}" for key in SCORE_STATS]], rows)]
    counts = info.get("label_counts") or {}
    names = list(splits) or list(counts)
    rows = [[escape_md(label), *[_cell(dig(counts, split, label)) for split in names]]
            for label in info.get("labels") or []]
    return [*lines, *_table(["Label", *[escape_md(n) for n in names]], rows)]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """{"files": {"all": {"path": p}}} as [("files.all.path", p)]: one readable line each."""
    pairs: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            pairs += _flatten(value, f"{name}.")
        else:
            pairs.append((name, value))
    return pairs


def _environment(data: Mapping[str, Any]) -> list[str]:
    env = data.get("environment")
    bench = data.get("benchmark") or {}
    lines = ["## Environment", ""]
    if not env:
        lines.append(f"No environment recorded ({NA}).")
    else:
        cpu = env.get("cpu") or {}
        isa = ", ".join(f"{escape_md(k)} {fmt_bool(v)}" for k, v in (cpu.get("isa") or {}).items())
        packages = ", ".join(f"{escape_md(k)} {escape_md(v)}"
                             for k, v in (env.get("packages") or {}).items())
        lines += _bullets([
            ("measured on (stage)", escape_md(env.get("stage"))),
            ("CPU", f"{escape_md(cpu.get('model'))} ({escape_md(cpu.get('arch'))})"),
            ("ISA flags", isa or NA),
            ("cores", f"{fmt_int(cpu.get('physical_cores'))} physical, "
                      f"{fmt_int(cpu.get('logical_cores'))} logical"),
            ("RAM", fmt_bytes(cpu.get("ram_bytes"))),
            ("OS", escape_md(env.get("os"))),
            ("Python", escape_md(env.get("python"))),
            ("packages", packages or NA),
        ])
    protocol = bench.get("protocol")
    protocol_text = _settings(protocol)
    lines += _bullets([
        ("bench threads (every model)", fmt_int(bench.get("threads"))),
        ("sequence length", fmt_int(bench.get("sequence_length"))),
        ("batch sizes", ", ".join(fmt_int(b) for b in bench.get("batch_sizes") or []) or NA),
        ("targets", ", ".join(escape_md(t) for t in bench.get("targets") or []) or NA),
        ("benchmark protocol", protocol_text or NA),
    ])
    rows = [[escape_md(row["name"]), _settings(row.get("runtime_info")),
             escape_md(dig(row, "memory", "peak_source"))]
            for row in data.get("artifacts") or [] if row.get("benchmarked")]
    if rows:
        lines += ["", *_table(["Artifact", "Runtime settings", "Peak memory from"], rows)]
    added = data.get("added_targets") or []
    if added:
        header = ["Target", "CPU", "ISA flags", "OS", "threads", "sequence lengths", "models"]
        table = [[escape_md(t["target"]),
                  f"{escape_md(t.get('cpu_model'))} ({escape_md(t.get('arch'))})",
                  ", ".join(escape_md(k) for k in t.get("isa") or {}) or NA,
                  escape_md(t.get("os")), _joined(t.get("threads")),
                  _joined(t.get("sequence_lengths")), _joined(t.get("models"))]
                 for t in added]
        lines += ["", "Benchmarks added from other devices (`kdedge report --add-bench`); their "
                  "rows are named MODEL@TARGET.", "", *_table(header, table)]
    return lines


def _settings(settings: Any) -> str:
    """{"providers": [...], "intra_op_threads": 4} as "providers CPUExecutionProvider, ..."."""
    if not isinstance(settings, Mapping) or not settings:
        return NA
    return ", ".join(f"{escape_md(k)} {_joined(v)}" for k, v in settings.items())


def _reproducibility(data: Mapping[str, Any]) -> list[str]:
    repro = data.get("reproducibility") or {}
    rows = [[escape_md(name), escape_md((s or {}).get("fingerprint")),
             escape_md((s or {}).get("status")), fmt_num((s or {}).get("duration_s"), 1),
             escape_md((s or {}).get("started_at"))]
            for name, s in (repro.get("stages") or {}).items()]
    return ["## Reproducibility", "", *_bullets([
        ("seed", escape_md(repro.get("seed"))),
        ("config", escape_md(repro.get("config_path"))),
        ("kdedge git sha", escape_md(repro.get("kdedge_git_sha"))),
        ("report written by kdedge", escape_md(repro.get("report_kdedge_version"))),
        ("reproduce", f"kdedge compress --config RUN\\_DIR/{escape_md(repro.get('config_path'))} "
                      "from where the run was started"),
    ]), "", *_table(["Stage", "Fingerprint", "Status", "Seconds", "Started"], rows)]


@COMPARISON_FORMATS.register("md")
def render_comparison_markdown(data: Mapping[str, Any]) -> str:
    """Runs side by side: one verdict per run, then one column group per run per artifact."""
    runs = data.get("runs") or []
    metric = data.get("primary_metric")
    lines = ["# kdedge run comparison", "",
             f"Baseline: {escape_md(data.get('baseline'))} (the first run named). Ratios "
             "against each run's own reference read reference / artifact; against the baseline, "
             "baseline's pick / this run's pick, so above 1 is better.", "", "## Verdicts", ""]
    header = ["Run", "Recipe", "Student", "Targets", "Recommended", "Retained", "Speed-up",
              "Size ratio", "Speed vs baseline", "Size vs baseline", "Score change vs baseline"]
    rows = [[escape_md(r["name"]), escape_md(r.get("recipe")), escape_md(r.get("student")),
             _joined(r.get("targets")),
             escape_md(r.get("recommended")) + (" (fallback)" if r.get("fallback") else ""),
             fmt_pct(dig(r, "headline", f"retained_{r.get('primary_metric')}")),
             fmt_ratio(dig(r, "headline", "speedup")), fmt_ratio(dig(r, "headline", "size_ratio")),
             fmt_ratio(dig(r, "vs_baseline", "speedup")),
             fmt_ratio(dig(r, "vs_baseline", "size_ratio")),
             fmt_metric_delta(dig(r, "vs_baseline", "score_delta"), metric or "")]
            for r in runs]
    lines += [*_table(header, rows), ""]
    lines += [f"- {escape_md(r['name'])}: {escape_md(r.get('summary'))}" for r in runs]
    names = list(dict.fromkeys(a["name"] for r in runs for a in r.get("artifacts") or []))
    header = ["Artifact"]
    for r in runs:
        run = escape_md(r["name"])
        header += [f"{run}: test {escape_md(metric_name(r.get('primary_metric') or ''))}",
                   f"{run}: p50 ms @{fmt_int(r.get('batch_size'))}", f"{run}: speed-up",
                   f"{run}: size", f"{run}: size ratio"]
    rows = []
    for name in names:
        cells = [escape_md(name)]
        for r in runs:
            a = next((a for a in r.get("artifacts") or [] if a["name"] == name), {})
            mark = " ✔" if a.get("recommended") else ""
            cells += [fmt_metric(a.get("test_score"), r.get("primary_metric") or "") + mark,
                      fmt_num(a.get("p50_ms")), fmt_ratio(a.get("speedup")),
                      fmt_bytes(a.get("size_bytes")), fmt_ratio(a.get("size_ratio"))]
        rows.append(cells)
    lines += ["", "## Artifacts per run", "",
              "✔ marks each run's recommended artifact.", "", *_table(header, rows)]
    return "\n".join(lines).rstrip() + "\n"


from kdedge.report import html as _html  # noqa: E402,F401  (registers the "html" formats)
