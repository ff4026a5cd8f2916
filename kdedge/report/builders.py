"""The report's sections in reading order: one builder per section, from the report data.

Each builder reads compare.py's report data and returns a Section (sections.py), or None when
its part of the run is absent (no generation data for a classifier). render.py and html.py
render the one list that build_sections returns, so report.md and report.html cannot drift.
A caller adds sections by passing its own builders (a task kind contributes its metrics so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kdedge.report import charts
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
from kdedge.report.sections import (
    Block,
    Builder,
    Bullets,
    Cell,
    Chart,
    Code,
    Figures,
    Section,
    Text,
    cell,
    facts,
    table,
)


def build_sections(report: Mapping[str, Any], extra_builders: Sequence[Builder] = (), *,
                   before: str = "parity") -> list[Section]:
    """The report's sections in reading order. A caller's extra builders (a task kind's own
    metrics) are placed, in the order given, before the section with id `before` (the export
    evidence by default), or at the end where no such section was built."""
    built = [s for s in (b(report) for b in BUILDERS) if s is not None]
    extra = [s for s in (b(report) for b in extra_builders) if s is not None]
    at = next((i for i, s in enumerate(built) if s.id == before), len(built))
    return [*built[:at], *extra, *built[at:]]


def subtitle(report: Mapping[str, Any]) -> str:
    """One line under the report's title: what was judged, by what, against what."""
    return (f"task {report.get('task') or NA}, judged by test {metric_name(_metrics(report)[0])}; "
            f"reference {report.get('reference') or NA}; "
            f"schema version {report.get('schema_version') or NA}")


def _metrics(report: Mapping[str, Any]) -> list[str]:
    """The task's quality metrics, primary first (reports written before regression: accuracy)."""
    return list(report.get("quality_metrics") or ["accuracy", "macro_f1"])


def _joined(values: Any) -> str:
    """A list as "0, 2, 4"; anything else as a cell."""
    return ", ".join(cell(v) for v in values) if isinstance(values, list) else cell(values)


def _value(value: float | None, metric: str, primary: str) -> str:
    """The primary metric as the report prints it everywhere; the others as plain numbers."""
    return fmt_metric(value, metric) if metric == primary else fmt_num(value, 4)


def _absent(id_: str, title: str, what: str) -> Section:
    """A section whose stage did not run says so rather than disappearing."""
    return Section(id_, title, (Text(f"{what} ({NA})."),))


# ---------------------------------------------------------------------------------------------
# verdict and warnings


def verdict(report: Mapping[str, Any]) -> Section:
    rec = report.get("recommendation") or {}
    name, metric = rec.get("artifact"), _metrics(report)[0]
    if name is None:
        ship, style = "No recommendation", "verdict none"
    elif rec.get("fallback"):
        ship = f"Recommended: {name} (fallback: no student met the {metric_name(metric)} floor)"
        style = "verdict fallback"
    else:
        ship, style = f"Recommended: {name}", "verdict"
    blocks: list[Block] = [Text(ship, "strong"), Text(cell(rec.get("summary")))]
    if name is not None:
        headline = rec.get("headline") or {}
        blocks.append(Figures((
            (fmt_pct(headline.get(f"retained_{metric}")),
             f"test {metric_name(metric)} kept vs {cell(rec.get('reference'))}"),
            (fmt_ratio(headline.get("speedup")), f"speed-up at batch {cell(rec.get('batch_size'))}"),
            (fmt_ratio(headline.get("size_ratio")), "smaller on disk"))))
    trade_offs = [cell(t.get("sentence")) for t in rec.get("trade_offs") or []]
    if trade_offs:
        blocks.append(Bullets(tuple(trade_offs), "Trade-off"))
    reasons = tuple(cell(r) for r in rec.get("reasons") or [] if r not in trade_offs)
    if reasons:
        blocks.append(Bullets(reasons, "Why"))
    targets = tuple(cell(t.get("sentence")) for t in rec.get("per_target") or [] if t.get("sentence"))
    if len(targets) > 1:  # one target's verdict is the headline above
        blocks.append(Bullets(targets, "On each target"))
    blocks.append(Text(f"Rule: {cell(rec.get('rule'))}", "muted"))
    return Section("verdict", "Verdict", tuple(blocks), style=style)


def warnings(report: Mapping[str, Any]) -> Section | None:
    notes = report.get("notes") or []
    return Section("warnings", "Warnings", (Bullets(tuple(map(cell, notes))),),
                   style="warnings") if notes else None


def remarks(report: Mapping[str, Any]) -> Section | None:
    """Facts about the machine worth knowing that call for no action (a CPU without VNNI)."""
    items = report.get("remarks") or []
    return Section("remarks", "Notes", (Bullets(tuple(map(cell, items))),)) if items else None


# ---------------------------------------------------------------------------------------------
# charts (the page only)


def charts_section(report: Mapping[str, Any]) -> Section:
    metric = _metrics(report)[0]
    unit = " (fraction)" if metric in ("accuracy", "macro_f1") else ""
    figures = (
        Chart("quality-vs-latency", _quality_chart(report, metric, unit),
              "Test score against p50 latency on each target; the dashed line joins the Pareto "
              "front (no other artifact is both faster and better)."),
        Chart("latency-distribution", _latency_chart(report),
              "Whisker: min to max; box: p50 to p95; thick bar: p50; thin ticks: p90 and p99."),
        Chart("training-loss", _training_chart(report, "train_loss", "Training loss per epoch",
                                               "training loss"),
              "Teacher fine-tuning and distillation, each phase its own line."),
        Chart("training-validation",
              _training_chart(report, f"validation_{metric}",
                              f"Validation {metric_name(metric)} per epoch",
                              f"validation {metric_name(metric)}{unit}"),
              "The best epoch of the last phase is the checkpoint that was kept."),
        Chart("size", _size_chart(report),
              "Bytes needed to run each artifact (bench), else its model file."),
    )
    return Section("charts", "Charts", figures, style="grid")


def _quality_chart(report: Mapping[str, Any], metric: str, unit: str) -> str:
    pareto = report.get("pareto") or {}
    bs = pareto.get("batch_size")
    points = [charts.Point(str(p["artifact"]), p["p50_ms"], p[metric], bool(p.get("on_front")))
              for p in pareto.get("points") or []]
    return charts.scatter("quality-vs-latency", points,
                          title=f"Test {metric_name(metric)} vs latency (batch {bs})",
                          x_label=f"p50 latency at batch {bs} (ms)",
                          y_label=f"test {metric_name(metric)}{unit}")


def _latency_chart(report: Mapping[str, Any]) -> str:
    bs = str(dig(report, "recommendation", "batch_size"))
    rows = []
    for row in report.get("artifacts") or []:
        s = dig(row, "latency", bs) or {}
        values = [s.get(k) for k in ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")]
        if all(isinstance(v, (int, float)) for v in values):
            rows.append(charts.Spread(str(row["name"]), *values))
    return charts.spreads("latency-distribution", rows,
                          title=f"Latency distribution per artifact (batch {bs})",
                          x_label=f"latency per batch of {bs} (ms)")


def _size_chart(report: Mapping[str, Any]) -> str:
    items = [(str(row["name"]), row["size_bytes"] / 2**20, fmt_bytes(row["size_bytes"]))
             for row in report.get("artifacts") or []
             if isinstance(row.get("size_bytes"), int) and "@" not in str(row["name"])]
    return charts.bars("size", items, title="Size per artifact", x_label="size (MiB)")


def _training_chart(report: Mapping[str, Any], key: str, title: str, y_label: str) -> str:
    series = []
    for stage in ("teacher", "distill"):
        phases: dict[str, list[tuple[float, float]]] = {}
        for h in dig(report, "training", stage, "history") or []:
            if isinstance(h.get("epoch"), (int, float)) and isinstance(h.get(key), (int, float)):
                phases.setdefault(str(h.get("phase") or ""), []).append((h["epoch"], h[key]))
        label = "teacher" if stage == "teacher" else "student"
        series += [charts.Series(f"{label} {phase}".strip(), points)
                   for phase, points in phases.items()]
    return charts.lines(f"training-{'loss' if key == 'train_loss' else 'validation'}", series,
                        title=title, x_label="epoch", y_label=y_label, integer_x=True)


# ---------------------------------------------------------------------------------------------
# artifacts, quality against latency, latency, generation speed


def artifacts(report: Mapping[str, Any]) -> Section:
    recommended = dig(report, "recommendation", "artifact")
    ref = cell(report.get("reference"))
    metrics = _metrics(report)
    header = ["Artifact", "Target", "Runtime", "Precision", f"Test {metric_name(metrics[0])}",
              *map(metric_title, metrics[1:]), f"Retained vs {ref}", "Size",
              f"Size ratio vs {ref}", "Parameters", "Load peak RSS", "Inference peak RSS",
              f"Memory ratio vs {ref}"]
    rows, marked = [], []
    for i, row in enumerate(report.get("artifacts") or []):
        ratios = row.get("vs_reference") or {}
        memory = row.get("memory") or {}
        if row["name"] == recommended:
            marked.append(i)
        rows.append([
            cell(row["name"]) + (" (recommended)" if row["name"] == recommended else ""),
            cell(row.get("target")), cell(row.get("runtime")), cell(row.get("precision")),
            *[_value(dig(row, "test", m), m, metrics[0]) + _batched(row, m) for m in metrics[:1]],
            *[_value(dig(row, "test", m), m, metrics[0]) for m in metrics[1:]],
            fmt_pct(row.get(f"retained_{metrics[0]}")), fmt_bytes(row.get("size_bytes")),
            fmt_ratio(ratios.get("size_ratio")), fmt_int(row.get("parameters")),
            fmt_bytes(memory.get("load_peak_rss_bytes")),
            fmt_bytes(memory.get("inference_peak_rss_bytes")), fmt_ratio(ratios.get("memory_ratio")),
        ])
    return Section("artifacts", "Artifacts", (
        Text(f"Quality is on the test split, each artifact through its own runtime; ONNX files "
             "one text per call, as a shipped bundle is called (where batching changes the score, "
             "the batched figure follows in brackets). Ratios read "
             f"{ref} / artifact, so above 1 is better. Size counts what is needed to run (bench), "
             "else the model file alone."),
        table(header, rows, text_cols=4, marked=tuple(marked))))


def _batched(row: Mapping[str, Any], metric: str) -> str:
    """" (0.7660 at 32/call)" when the batched score differs from the one-text-per-call one."""
    batched = row.get("batched") or {}
    if not batched.get("differs"):
        return ""
    return f" ({_value(dig(batched, 'test', metric), metric, metric)} at {batched.get('batch_size')}/call)"


def pareto(report: Mapping[str, Any]) -> Section | None:
    found = report.get("pareto")
    if not found:
        return None
    metric = found["metric"]
    rows = [[cell(p["artifact"]), cell(p["target"]), fmt_num(p["p50_ms"]),
             fmt_metric(p[metric], metric), fmt_bool(p.get("on_front"))]
            for p in found.get("points") or []]
    return Section("pareto", "Quality against latency", (
        Text(f"Batch {fmt_int(found.get('batch_size'))}. On the Pareto front: no other artifact "
             "on the same target is both faster and better."),
        table(["Artifact", "Target", "p50 ms", f"Test {metric_name(metric)}", "Pareto front"],
              rows, text_cols=2)))


def latency(report: Mapping[str, Any]) -> Section:
    sizes = [str(bs) for bs in report.get("batch_sizes") or []]
    bench = report.get("benchmark") or {}
    if not sizes:
        return _absent("latency", "Latency", "No benchmark numbers in this run")
    ref = cell(report.get("reference"))
    header = ["Artifact", "Batch", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "min ms", "max ms",
              "samples/s", f"Speed-up vs {ref}", "Runs"]
    rows = []
    for row in report.get("artifacts") or []:
        if not row.get("latency"):  # not benchmarked: said once below, not as rows of n/a
            continue
        for bs in sizes:
            s = dig(row, "latency", bs) or {}
            rows.append([cell(row["name"]), bs, *[fmt_num(s.get(k)) for k in (
                "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms")],
                fmt_num(s.get("throughput_samples_per_s"), 1),
                fmt_ratio(dig(row, "vs_reference", "speedup", bs)), fmt_int(s.get("runs"))])
    unmeasured = [cell(row["name"]) + (f" ({row['bench_skipped']})" if row.get("bench_skipped")
                                       else "")
                  for row in report.get("artifacts") or [] if not row.get("latency")]
    blocks: list[Block] = [
        Text(f"Milliseconds per batch at sequence length {fmt_int(bench.get('sequence_length'))}"
             f"{_basis(bench)} with {fmt_int(bench.get('threads'))} threads; "
             f"speed-up = {ref} p50 / artifact p50 at the same batch size."),
        table(header, rows)]
    if unmeasured:
        blocks.append(Text(f"Not benchmarked: {'; '.join(unmeasured)}.", "muted"))
    sweep = bench.get("sweep") or []
    parts = (Section("sweep", "Sweep", (
        Text("Every measured point of the grid; the table above is its first thread count and "
             "sequence length."),
        table(["Artifact", "Threads", "Sequence length", "Batch", "p50 ms", "p95 ms", "samples/s"],
              [[cell(p["artifact"]), fmt_int(p.get("threads")), fmt_int(p.get("sequence_length")),
                fmt_int(p.get("batch_size")), fmt_num(p.get("p50_ms")), fmt_num(p.get("p95_ms")),
                fmt_num(p.get("throughput_samples_per_s"), 1)] for p in sweep]))),) if sweep else ()
    return Section("latency", "Latency", tuple(blocks), parts)


def _generation_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the generation speed table (empty when no artifact generated)."""
    sizes = [str(bs) for bs in report.get("batch_sizes") or []]
    rows = []
    for row in report.get("artifacts") or []:
        points = [dig(row, "latency", bs) or {} for bs in sizes]
        if not any(p.get("tokens_per_s") is not None for p in points):
            continue
        cells = [cell(row["name"])]
        for p in points:
            cells += [fmt_num(p.get("tokens_per_s"), 1), fmt_num(p.get("time_to_first_token_ms")),
                      fmt_num(p.get("p50_ms"))]
        rows.append(cells)
    header = ["Artifact"]
    for bs in sizes:
        header += [f"tokens/s @{bs}", f"first token ms @{bs}", f"ms per sequence @{bs}"]
    return (header, rows) if rows else ([], [])


def generation(report: Mapping[str, Any]) -> Section | None:
    header, rows = _generation_rows(report)
    if not rows:
        return None
    return Section("generation", "Generation speed", (
        Text("Greedy decoding of a fixed number of new tokens per sequence (the bench's setting), "
             "p50 over runs; time to first token is a generate call of one token."),
        table(header, rows)))


# ---------------------------------------------------------------------------------------------
# quality in detail: per class, confusion, disagreements, example generations


def _quality_rows(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Artifacts with their own test scores: a MODEL@TARGET row scores as MODEL's file does."""
    return [row for row in report.get("artifacts") or [] if "@" not in str(row["name"])
            and row.get("test")]


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) and i < len(values) else None


def per_class(report: Mapping[str, Any]) -> Section | None:
    found = report.get("per_class")
    if not found:
        return None
    labels = found.get("labels") or []
    f1 = found.get("f1") or {}
    compact = table(["Label", "Support", *map(cell, f1)],
                    [[cell(label), fmt_int(_at(found.get("support"), i)),
                      *[fmt_num(_at(values, i), 4) for values in f1.values()]]
                     for i, label in enumerate(labels)])
    rows = []
    for row in _quality_rows(report):
        pc = dig(row, "test", "per_class") or {}
        rows += [[cell(row["name"]), cell(label), fmt_int(_at(pc.get("support"), i)),
                  *[fmt_num(_at(pc.get(k), i), 4) for k in ("precision", "recall", "f1")]]
                 for i, label in enumerate(labels) if pc]
    blocks: list[Block] = [Text("F1 of each label, one column per artifact:"), compact]
    if rows:
        blocks += [Text("Each artifact's precision, recall and F1 per label:"),
                   table(["Artifact", "Label", "Support", "Precision", "Recall", "F1"], rows,
                         text_cols=2)]
    return Section("per-class", "Per-class precision, recall and F1 (test)", tuple(blocks))


def confusion(report: Mapping[str, Any]) -> Section | None:
    labels = dig(report, "per_class", "labels") or []
    parts = []
    for row in _quality_rows(report):
        matrix = dig(row, "test", "confusion")
        if not isinstance(matrix, list) or not matrix:
            continue
        names = labels if len(labels) == len(matrix) else [str(i) for i in range(len(matrix))]
        parts.append(Section("", cell(row["name"]), (table(
            ["gold \\ predicted", *map(cell, names)],
            [[cell(names[i]), *[fmt_int(v) for v in line]] for i, line in enumerate(matrix)]),)))
    if not parts:
        return None
    return Section("confusion", "Confusion matrices (test)",
                   (Text("Rows are gold labels, columns predictions."),), tuple(parts),
                   style="side-by-side")


def _example_text(example: Mapping[str, Any]) -> str:
    pair = example.get("text_pair")
    return cell(example.get("text")) + ("" if pair is None else f" / {cell(pair)}")


def disagreements(report: Mapping[str, Any]) -> Section | None:
    found = report.get("disagreements")
    if not found:
        return None
    examples = found.get("examples") or []
    if any(e.get("gap") is not None for e in examples):
        intro = (f"The {len(examples)} test examples with the largest gap between the teacher's "
                 "and the student's ONNX scores.")
        header = ["Text", "Gold", "Teacher", "Student", "Gap"]
        rows = [[_example_text(e), cell(e.get("gold")), fmt_num(e.get("teacher"), 4),
                 fmt_num(e.get("student"), 4), fmt_num(e.get("gap"), 4)] for e in examples]
    else:
        intro = (f"The teacher's and the student's ONNX models disagree on "
                 f"{fmt_int(found.get('count'))} of {fmt_int(found.get('examples_total'))} test "
                 f"examples ({fmt_pct(found.get('rate'))}); below, those the teacher was most "
                 "confident about.")
        header = ["Text", "Gold", "Teacher (confidence)", "Student (confidence)"]
        rows = [[_example_text(e), cell(e.get("gold")),
                 f"{cell(e.get('teacher'))} ({fmt_pct(e.get('teacher_confidence'))})",
                 f"{cell(e.get('student'))} ({fmt_pct(e.get('student_confidence'))})"]
                for e in examples]
    return Section("disagreements", "Where teacher and student disagree",
                   (Text(intro), table(header, rows, text_cols=2, wrap=0)))


def _generation_examples(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the example generations: source, gold, then each model's output."""
    examples = dig(report, "generations", "examples") or []
    if not examples:
        return [], []
    models = [k for k in examples[0] if k not in ("index", "source", "gold")]
    return (["Source", "Gold", *models],
            [[str(e.get(k, "")) for k in ("source", "gold", *models)] for e in examples])


def generations(report: Mapping[str, Any]) -> Section | None:
    header, rows = _generation_examples(report)
    if not rows:
        return None
    return Section("generations", "Example generations (test)", (
        Text("The first test sources (cut), their gold target, and each ONNX model's greedy "
             "output."),
        table(header, rows, text_cols=len(header), wrap=0)))


# ---------------------------------------------------------------------------------------------
# the pipeline's evidence: export parity, quantization, training


def _shapes(shapes: Any) -> str:
    """[[1, 16], [8, 64]] as "1×16, 8×64"."""
    if not isinstance(shapes, list) or not shapes:
        return NA
    return ", ".join("×".join(cell(d) for d in s) if isinstance(s, list) else cell(s)
                     for s in shapes)


def parity(report: Mapping[str, Any]) -> Section:
    models = dig(report, "export", "models")
    if not models:
        return _absent("parity", "Export parity", "No export in this run")
    metric = _metrics(report)[0]
    rows = [[cell(name), cell(m.get("path")), fmt_int(m.get("opset")),
             fmt_sci(m.get("max_abs_diff")), fmt_sci(m.get("atol")),
             fmt_bool(m.get("passed"), "pass", "FAIL"), _shapes(m.get("shapes")),
             fmt_metric(m.get(f"test_{metric}"), metric),
             fmt_metric(m.get(f"pytorch_test_{metric}"), metric),
             fmt_metric_delta(m.get(f"{metric}_delta_vs_pytorch"), metric)]
            for name, m in models.items()]
    header = ["Model", "Path", "Opset", "Max abs diff", "atol", "Result", "Shapes (batch×seq)",
              f"ONNX test {metric_name(metric)}", f"PyTorch test {metric_name(metric)}", "Change"]
    return Section("parity", "Export parity", (table(header, rows, text_cols=2),))


def _gate(gate: Mapping[str, Any] | None) -> str:
    if not gate or gate.get("passed") is None:
        return "off"
    if gate.get("passed"):
        return (f"passed (max drop {cell(gate.get('max_drop'))}"
                + (", after a fallback)" if gate.get("fallback_used") else ")"))
    return f"FAILED: {cell(gate.get('reason'))}"


def quantization(report: Mapping[str, Any]) -> Section:
    models = dig(report, "quantization", "models")
    if not models:
        return _absent("quantization", "Quantization", "No quantized model in this run")
    metrics = _metrics(report)
    parts = []
    for name, q in models.items():
        blocks: list[Block] = [facts([
            ("source", cell(q.get("source"))), ("path", cell(q.get("path"))),
            ("mode", cell(q.get("mode"))), ("preset", cell(q.get("preset"))),
            ("per-channel", fmt_bool(q.get("per_channel"))),
            ("graph optimization", cell(q.get("optimization"))),
            ("MatMuls quantized", f"{fmt_int(q.get('matmul_int8'))} of "
                                  f"{fmt_int(q.get('matmul_total'))}"),
            ("validation gate", _gate(q.get("gate"))),
            ("size", f"{fmt_bytes(q.get('fp32_bytes'))} → {fmt_bytes(q.get('bytes'))} "
                     f"({fmt_ratio(q.get('size_ratio'))} smaller)"),
            *[(f"test {metric_name(m)}", f"{_value(q.get(f'fp32_test_{m}'), m, metrics[0])} → "
                                          f"{_value(q.get(f'test_{m}'), m, metrics[0])} "
                                          f"({fmt_metric_delta(q.get(f'{m}_delta'), m)})")
              for m in metrics]])]
        attempts = q.get("attempts") or []
        if attempts:
            blocks.append(table(
                ["Attempt", "Quantization", "Validation", "Drop", "Passed", "Size",
                 "Batch-1 p50 (in-process)"],
                [[cell(a.get("step")), cell(a.get("label")), fmt_num(a.get("validation"), 4),
                  fmt_num(a.get("drop"), 4), fmt_bool(a.get("passed")), fmt_bytes(a.get("bytes")),
                  fmt_ms(a.get("batch1_p50_ms"))] for a in attempts], text_cols=2))
        parts.append(Section("", cell(name), tuple(blocks)))
    return Section("quantization", "Quantization", parts=tuple(parts))


def history_table(history: list[Mapping[str, Any]], best_epoch: int | None = None,
                  metric: str = "accuracy") -> Block:
    """Per-epoch training history; a phase column when the recipe has phases, a teacher-share
    column when several teachers were selected from."""
    if not history:
        return Text(f"No per-epoch history ({NA}).")
    last_phase = history[-1].get("phase")  # best_epoch counts within the last phase
    rows = [[cell(h.get("epoch")) + (" (best)" if h.get("epoch") == best_epoch
                                      and h.get("phase") == last_phase else ""),
             fmt_num(h.get("train_loss"), 4), fmt_metric(h.get(f"validation_{metric}"), metric),
             fmt_num(h.get("seconds"), 1), fmt_num(h.get("examples_per_s"), 1)] for h in history]
    header = ["Epoch", "Train loss", f"Validation {metric_name(metric)}", "Seconds", "Examples/s"]
    if any("teachers_used" in h for h in history):
        rows = [[*row, " / ".join(fmt_num(u, 2) for u in h.get("teachers_used") or []) or NA]
                for h, row in zip(history, rows, strict=True)]
        header = [*header, "Share of instances per teacher"]
    if any("phase" in h for h in history):
        rows = [[cell(h.get("phase")), *row] for h, row in zip(history, rows, strict=True)]
        return table(["Phase", *header], rows, text_cols=2)
    return table(header, rows)


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


def _multi_task_teacher(summary: Mapping[str, Any] | None, teacher: Mapping[str, Any],
                        metric: str, name: str) -> list[tuple[str, str]]:
    """MKD's one teacher of every task: a fact line beside the run's single-task teacher."""
    if not summary:
        return []
    trained = ("from the cache" if summary.get("cache_hit") else
               f"fine-tuned here for {fmt_int(summary.get('epochs'))} epoch(s), best "
               f"{fmt_int(summary.get('best_epoch'))}")
    return [("multi-task teacher", (
        f"one teacher fine-tuned on every task ({trained}; mean validation score "
        f"{fmt_num(summary.get('mean_validation_score'), 4)}); test {name} on this task "
        f"{fmt_metric(summary.get(f'test_{metric}'), metric)}, the single-task teacher's "
        f"{fmt_metric(teacher.get(f'test_{metric}'), metric)}"))]


def training(report: Mapping[str, Any]) -> Section:
    teacher = dig(report, "training", "teacher")
    distill = dig(report, "training", "distill")
    metric = _metrics(report)[0]
    name = metric_name(metric)
    if teacher:
        teacher_part = Section("", "Teacher", (facts([
            ("model", cell(teacher.get("model"))),
            ("fine-tuned here", fmt_bool(teacher.get("fine_tuned"))),
            ("from cache", fmt_bool(teacher.get("cache_hit"))),
            ("parameters", fmt_int(teacher.get("parameters"))),
            (f"validation / test {name}", _pair(teacher, metric)),
            ("training processes", fmt_processes(teacher.get("processes"))),
            ("stage time", f"{fmt_num(teacher.get('duration_s'), 1)} s"),
        ]), history_table(teacher.get("history") or [], metric=metric)))
    else:
        teacher_part = _absent("", "Teacher", "No teacher stage in this run")
    if distill:
        student = distill.get("student") or {}
        header, rows = lifelong_rows(distill.get("lifelong"))
        lifelong = (Section("", "The lifelong stream", (
            Text("Test ROUGE-L of every task after each step of the stream (the model learns the "
                 "tasks in this order), against each task's own teacher and one model trained on "
                 "every task at once."), table(header, rows))),) if rows else ()
        distill_part = Section("", "Distillation", (facts([
            ("recipe", cell(distill.get("recipe"))),
            ("temperature / alpha", f"{fmt_num(distill.get('temperature'))} / "
                                    f"{fmt_num(distill.get('alpha'))}"),
            ("student", cell(student.get("source"))),
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
            *[(f"teacher {i}", f"{cell(t.get('model'))}, test {name} "
                               f"{fmt_metric(t.get(f'test_{metric}'), metric)}")
              for i, t in enumerate(distill.get("extra_teachers") or [], start=2)],
            *[(f"task {task}", f"{metric_name(t.get('metric') or 'score')} of the multi-task "
                               f"student {fmt_num(t.get('test'), 4)} (its teacher "
                               f"{fmt_num(t.get('teacher_test'), 4)}), test split")
              for task, t in (distill.get("other_tasks") or {}).items()],
            *_multi_task_teacher(distill.get("multi_task_teacher"), teacher, metric, name),
        ]), history_table(distill.get("history") or [], distill.get("best_epoch"), metric)),
            lifelong)
    else:
        distill_part = _absent("", "Distillation", "No distillation stage in this run")
    return Section("training", "Training", parts=(teacher_part, distill_part))


# ---------------------------------------------------------------------------------------------
# data, environment, reproducibility

SCORE_STATS = ("mean", "std", "min", "max")  # the data stage's label_stats of a regression task


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


def data_section(report: Mapping[str, Any]) -> Section:
    info = report.get("data")
    if not info:
        return _absent("data", "Data", "No data stage in this run")
    source = info.get("source")
    pairs = ([(k, cell(v)) for k, v in _flatten(source)] if isinstance(source, Mapping)
             else [("source", cell(source))])
    splits = info.get("splits") or {}
    blocks: list[Block] = [facts([
        *pairs, ("task", cell(report.get("task") or "classification")),
        *[(f"{reader} reads", f"column {column}")
          for reader, column in (info.get("views") or {}).items()],
        ("splits", ", ".join(f"{k}: {fmt_int(v)}" for k, v in splits.items()) or NA),
        ("labels", fmt_int(info.get("num_labels")))])]
    counts = info.get("label_counts")
    if isinstance(counts, Mapping) and counts:
        names = list(splits) or list(counts)
        blocks.append(table(["Label", *names],
                            [[cell(label), *[cell(dig(counts, split, label)) for split in names]]
                             for label in info.get("labels") or []]))
    stats = info.get("label_stats")
    if isinstance(stats, Mapping):  # regression: how the scores spread in each split
        blocks.append(table(["Split", *[f"Score {key}" for key in SCORE_STATS]],
                            [[cell(split), *[fmt_num(dig(values, key), 4) for key in SCORE_STATS]]
                             for split, values in stats.items()]))
    return Section("data", "Data", tuple(blocks))


def _basis(bench: Mapping[str, Any]) -> str:
    """Why the bench ran at its sequence length, in parentheses, when the results say."""
    basis = bench.get("sequence_length_basis")
    return f" ({cell(basis)})" if basis else ""


def _settings(settings: Any) -> str:
    """{"providers": [...], "intra_op_threads": 4} as "providers CPUExecutionProvider, ..."."""
    if not isinstance(settings, Mapping) or not settings:
        return NA
    return ", ".join(f"{k} {_joined(v)}" for k, v in settings.items())


def environment(report: Mapping[str, Any]) -> Section:
    env = report.get("environment")
    bench = report.get("benchmark") or {}
    blocks: list[Block] = []
    if not env:
        blocks.append(Text(f"No environment recorded ({NA})."))
        pairs: list[tuple[str, Cell]] = []
    else:
        cpu = env.get("cpu") or {}
        pairs = [
            ("measured on (stage)", cell(env.get("stage"))),
            ("CPU", f"{cell(cpu.get('model'))} ({cell(cpu.get('arch'))})"),
            ("ISA flags", ", ".join(f"{k} {fmt_bool(v)}" for k, v in (cpu.get("isa") or {}).items())
             or NA),
            ("cores", f"{fmt_int(cpu.get('physical_cores'))} physical, "
                      f"{fmt_int(cpu.get('logical_cores'))} logical"),
            ("RAM", fmt_bytes(cpu.get("ram_bytes"))),
            ("OS", cell(env.get("os"))),
            ("Python", cell(env.get("python"))),
            ("packages", ", ".join(f"{k} {cell(v)}" for k, v in (env.get("packages") or {}).items())
             or NA),
        ]
    blocks.append(facts([
        *pairs,
        ("bench threads (every model)", fmt_int(bench.get("threads"))),
        ("sequence length", fmt_int(bench.get("sequence_length")) + _basis(bench)),
        ("batch sizes", ", ".join(fmt_int(b) for b in bench.get("batch_sizes") or []) or NA),
        ("targets", ", ".join(map(cell, bench.get("targets") or [])) or NA),
        ("benchmark protocol", _settings(bench.get("protocol"))),
    ]))
    rows = [[cell(row["name"]), _settings(row.get("runtime_info")),
             cell(dig(row, "memory", "peak_source"))]
            for row in report.get("artifacts") or [] if row.get("benchmarked")]
    if rows:
        blocks.append(table(["Artifact", "Runtime settings", "Peak memory from"], rows,
                            text_cols=3))
    added = report.get("added_targets") or []
    parts = (Section("", "Benchmarks added from other devices", (
        Text("Added with kdedge report --add-bench; their rows are named MODEL@TARGET."),
        table(["Target", "CPU", "ISA flags", "OS", "threads", "sequence lengths", "models"],
              [[cell(t["target"]), f"{cell(t.get('cpu_model'))} ({cell(t.get('arch'))})",
                ", ".join(map(cell, t.get("isa") or {})) or NA, cell(t.get("os")),
                _joined(t.get("threads")), _joined(t.get("sequence_lengths")),
                _joined(t.get("models"))] for t in added], text_cols=4))),) if added else ()
    return Section("environment", "Environment", tuple(blocks), parts)


def reproducibility(report: Mapping[str, Any]) -> Section:
    repro = report.get("reproducibility") or {}
    config = cell(repro.get("config_path"))
    rows = [[cell(name), Code(cell((s or {}).get("fingerprint"))), cell((s or {}).get("status")),
             fmt_num((s or {}).get("duration_s"), 1), cell((s or {}).get("started_at"))]
            for name, s in (repro.get("stages") or {}).items()]
    return Section("reproducibility", "Reproducibility", (
        facts([("seed", NA if repro.get("seed") is None else str(repro["seed"])),
               ("config", Code(config)),
               ("kdedge git sha", cell(repro.get("kdedge_git_sha"))),
               ("report written by kdedge", cell(repro.get("report_kdedge_version"))),
               ("reproduce, from where the run was started",
                Code(f"kdedge compress --config RUN_DIR/{config}"))]),
        table(["Stage", "Fingerprint", "Status", "Seconds", "Started"], rows, text_cols=3)))


def search(report: Mapping[str, Any]) -> Section | None:
    """distill.student auto: every candidate, its latency on the target and its validation
    score, the budget, and why the winner won."""
    found = dig(report, "training", "distill", "search")
    if not found:
        return None
    budget, teacher = found.get("budget") or {}, found.get("teacher") or {}
    rows, points = [], []
    for c in found.get("candidates") or []:
        trained = c.get("validation_score") is not None
        status = ("pruned by latency, not trained" if c.get("pruned_by_latency") else
                  f"{fmt_int(c.get('epochs'))} epoch(s)" + (", finalist" if c.get("finalist") else ""))
        rows.append([cell(c["name"]) + (" (winner)" if c.get("winner") else ""),
                     cell(c.get("student")), fmt_int(c.get("parameters")), cell(c.get("precision")),
                     fmt_num(c.get("latency_ms")), fmt_ratio(c.get("speedup")),
                     fmt_bytes(c.get("size_bytes")), status,
                     fmt_num(c.get("validation_score"), 4) if trained else NA,
                     fmt_pct(c.get("retention")) if trained else NA])
        if trained:
            points.append(charts.Point(str(c["name"]), c["latency_ms"], c["retention"],
                                       bool(c.get("winner"))))
    limit = budget.get("latency_limit_ms")
    chart = charts.scatter(
        "search", points, title="Student search: retention against latency on the target",
        x_label="batch-1 p50 latency (ms), faster precision",
        y_label="validation score / teacher's", front_label="winner", join=False,
        x_limit=limit, y_limit=budget.get("min_retention"), other_label="other candidates")
    marked = tuple(i for i, c in enumerate(found.get("candidates") or []) if c.get("winner"))
    return Section("search", "Student search", (
        Text(f"distill.student auto: {cell(found.get('reason'))}. Latencies were "
             f"{cell(found.get('latency_source'))}, untrained at each candidate's real shapes "
             f"(the teacher's ONNX fp32: {fmt_num(teacher.get('latency_ms'))} ms); every "
             f"candidate trained {fmt_int(dig(found, 'schedule', 'first_epochs'))} epoch(s) on "
             "the cached teacher outputs and the finalists to the end of the schedule."),
        facts([("retention budget", fmt_pct(budget.get("min_retention"))),
               ("latency budget", f"{fmt_num(limit)} ms" if limit else "none"),
               ("vocabulary", cell(dig(found, "schedule", "vocabulary"))),
               ("teacher validation score", fmt_num(teacher.get("validation_score"), 4))]),
        Chart("search", chart, "Each trained candidate; the dashed red lines are the budgets "
                               "(retention, and latency when one is set)."),
        table(["Candidate", "Student", "Parameters", "Precision", "p50 ms", "Speed-up", "Size",
               "Trained", "Validation", "Retention"], rows, text_cols=2, marked=marked)))


BUILDERS: tuple[Builder, ...] = (
    verdict, warnings, remarks, charts_section, artifacts, pareto, search, latency, generation,
    per_class,
    confusion, disagreements, generations, parity, quantization, training, data_section,
    environment, reproducibility)


# ---------------------------------------------------------------------------------------------
# several runs side by side (compare.build_comparison's data)


def comparison_subtitle(data: Mapping[str, Any]) -> str:
    return f"{len(data.get('runs') or [])} runs; baseline {cell(data.get('baseline'))} (the first named)"


def comparison_sections(data: Mapping[str, Any]) -> list[Section]:
    """Verdicts, a chart of every run's artifacts, and one column group per run per artifact."""
    runs = data.get("runs") or []
    metric = cell(data.get("primary_metric") or "")
    header = ["Run", "Recipe", "Student", "Targets", "Recommended", "Retained", "Speed-up",
              "Size ratio", "Speed vs baseline", "Size vs baseline", "Score change vs baseline"]
    rows = [[cell(r["name"]), cell(r.get("recipe")), cell(r.get("student")), _joined(r.get("targets")),
             cell(r.get("recommended")) + (" (fallback)" if r.get("fallback") else ""),
             fmt_pct(dig(r, "headline", f"retained_{r.get('primary_metric')}")),
             fmt_ratio(dig(r, "headline", "speedup")), fmt_ratio(dig(r, "headline", "size_ratio")),
             fmt_ratio(dig(r, "vs_baseline", "speedup")),
             fmt_ratio(dig(r, "vs_baseline", "size_ratio")),
             fmt_metric_delta(dig(r, "vs_baseline", "score_delta"), metric)] for r in runs]
    verdicts = Section("verdicts", "Verdicts", (
        Text("Ratios against each run's own reference read reference / artifact; against the "
             "baseline, baseline's pick / this run's pick, so above 1 is better."),
        table(header, rows, text_cols=5),
        Bullets(tuple(f"{r['name']}: {cell(r.get('summary'))}" for r in runs))))
    points = [charts.Point(f"{r['name']}: {a['name']}", a["p50_ms"], a["test_score"],
                           bool(a.get("recommended")))
              for r in runs for a in r.get("artifacts") or []
              if isinstance(a.get("p50_ms"), (int, float))
              and isinstance(a.get("test_score"), (int, float)) and "@" not in a["name"]]
    chart = Section("chart", "Chart", (Chart("runs-quality-vs-latency", charts.scatter(
        "runs-quality-vs-latency", points,
        title=f"Test {metric_name(metric)} vs p50 latency, every run",
        x_label="p50 latency at each run's ranking batch (ms)",
        y_label=f"test {metric_name(metric)}", front_label="recommended"),
        "Each run's CPU artifacts; the recommended ones are blue, joined by the dashed line."),))
    names = list(dict.fromkeys(a["name"] for r in runs for a in r.get("artifacts") or []))
    header = ["Artifact"]
    for r in runs:
        header += [f"{r['name']}: test {metric_name(r.get('primary_metric') or '')}",
                   f"{r['name']}: p50 ms @{fmt_int(r.get('batch_size'))}", f"{r['name']}: speed-up",
                   f"{r['name']}: size", f"{r['name']}: size ratio"]
    rows = []
    for name in names:
        cells = [cell(name)]
        for r in runs:
            a = next((a for a in r.get("artifacts") or [] if a["name"] == name), {})
            cells += [fmt_metric(a.get("test_score"), r.get("primary_metric") or "")
                      + (" ✔" if a.get("recommended") else ""),
                      fmt_num(a.get("p50_ms")), fmt_ratio(a.get("speedup")),
                      fmt_bytes(a.get("size_bytes")), fmt_ratio(a.get("size_ratio"))]
        rows.append(cells)
    per_run = Section("artifacts", "Artifacts per run", (
        Text("✔ marks each run's recommended artifact; ratios are against that run's own "
             "reference."), table(header, rows)))
    return [verdicts, chart, per_run]
