"""report.html: the report as one self-contained page, with SVG charts.

The page is rendered from the same report data as report.md and prints the same formatted
values (kdedge.report.formatting); charts are inline SVG from charts.py, the style is an
inline <style>, and there is no script, font, image or link to fetch, so it opens from disk
offline. Every string from a run passes through html.escape before it reaches the page.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from html import escape
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
from kdedge.report.render import (
    COMPARISON_FORMATS,
    FORMATS,
    generation_examples,
    generation_rows,
    lifelong_rows,
)

CHARTS = ("quality-vs-latency", "latency-distribution", "training-loss", "training-validation",
          "size")

STYLE = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #2563eb; --bad: #b91c1c;
        --good: #047857; --bg: #ffffff; --panel: #f9fafb; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1360px; padding: 24px 32px 64px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 36px 0 10px;
     border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 20px 0 8px; }
.sub { color: var(--muted); margin: 0 0 18px; }
.verdict { border: 1px solid var(--line); border-left: 6px solid var(--good);
           background: var(--panel); padding: 14px 18px; border-radius: 6px; display: grid;
           grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 8px 32px; }
.verdict h3 { margin-top: 12px; }
.verdict.fallback { border-left-color: #d97706; } .verdict.none { border-left-color: var(--bad); }
.verdict .ship { font-size: 20px; font-weight: 650; margin: 0 0 6px; }
.verdict ul { margin: 8px 0 0 18px; padding: 0; }
.kpis { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0 0; }
.kpi { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px;
       min-width: 150px; }
.kpi b { display: block; font-size: 20px; } .kpi span { color: var(--muted); font-size: 12px; }
.warnings { border-left: 6px solid #d97706; background: #fffbeb; padding: 10px 18px;
            border-radius: 6px; margin-top: 16px; }
.warnings ul { margin: 4px 0 0 18px; padding: 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px;
        align-items: start; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px;
         padding: 8px; }
figure svg { width: 100%; height: auto; display: block; }
figure.single { max-width: 760px; }
figcaption { color: var(--muted); font-size: 12px; padding: 4px 6px 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: var(--panel); font-weight: 600; }
th[colspan] { text-align: center; }
td.text, th.text { text-align: left; }
td.wrap { white-space: normal; min-width: 320px; max-width: 640px; }
tr.recommended td { background: #ecfdf5; font-weight: 600; }
td.bad { color: var(--bad); font-weight: 600; } td.good { color: var(--good); }
.confusions { display: flex; flex-wrap: wrap; gap: 18px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 6px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: #1f2937; }
svg .title { font-size: 15px; font-weight: 600; } svg .label { font-size: 12px; fill: #4b5563; }
svg .tick, svg .legend, svg .value, svg .point-label, svg .row-label { font-size: 11px; }
svg .empty { font-size: 13px; fill: #6b7280; }
svg .grid { stroke: #eef0f3; } svg .axis, svg .tickmark { stroke: #9ca3af; }
svg .point { fill: #9ca3af; stroke: #fff; stroke-width: 1.5; }
svg .on-front { fill: #2563eb; stroke: #fff; stroke-width: 1.5; }
svg .front { fill: none; stroke: #2563eb; stroke-width: 2; stroke-dasharray: 6 4; }
svg .series { fill: none; stroke-width: 2; }
svg .whisker { stroke: #6b7280; stroke-width: 1.5; } svg .box { opacity: 0.75; }
svg .median { stroke: #111827; stroke-width: 2.5; } svg .pct { stroke: #111827; stroke-width: 1; }
"""


def _e(value: Any) -> str:
    """Any value from the data as inert HTML text; None as n/a."""
    return NA if value is None else escape(str(value))



def _metrics(data: Mapping[str, Any]) -> list[str]:
    return list(data.get("quality_metrics") or ["accuracy", "macro_f1"])


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], *, text_cols: int = 1,
           row_classes: Iterable[str] | None = None, wrap: int | None = None) -> str:
    """A table whose header and cells arrive escaped; the first text_cols columns are text,
    and column `wrap` (long texts) wraps where the others keep to one line."""
    head = "".join(f'<th class="text">{h}</th>' if i < text_cols else f"<th>{h}</th>"
                   for i, h in enumerate(header))
    classes = list(row_classes or [])
    body = []
    for r, cells in enumerate(rows):
        cls = f' class="{classes[r]}"' if r < len(classes) and classes[r] else ""
        body.append(f"<tr{cls}>" + "".join(
            f'<td class="text wrap">{c}</td>' if i == wrap else
            f'<td class="text">{c}</td>' if i < text_cols else f"<td>{c}</td>"
            for i, c in enumerate(cells)) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _text_table(header: Iterable[str], rows: Iterable[Iterable[str]], **options: Any) -> str:
    """_table over plain strings, escaped here."""
    return _table([_e(h) for h in header], [[_e(c) for c in r] for r in rows], **options)


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


@FORMATS.register("html")
def render_html(data: Mapping[str, Any]) -> str:
    """The whole page: verdict, charts, then the evidence tables."""
    body = "".join(part(data) for part in (
        _verdict, _warnings, _charts, _artifacts, _latency, _generation, _per_class, _confusion,
        _disagreements, _generations, _parity, _quantization, _training, _data, _environment,
        _reproducibility))
    return page("kdedge deployment report", body,
                f"task {_e(data.get('task'))}, judged by test "
                f"{_e(metric_name(_metrics(data)[0]))}; reference {_e(data.get('reference'))}; "
                f"schema version {_e(data.get('schema_version'))}")


def page(title: str, body: str, subtitle: str) -> str:
    """The HTML document around a body: inline style, no script, nothing fetched."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{escape(title)}</h1><p class=\"sub\">{subtitle}</p>{body}</body></html>\n")


# ---------------------------------------------------------------------------------------------
# the verdict


def _verdict(data: Mapping[str, Any]) -> str:
    rec = data.get("recommendation") or {}
    name, metric = rec.get("artifact"), _metrics(data)[0]
    kind = "none" if name is None else ("fallback" if rec.get("fallback") else "")
    ship = ("No recommendation" if name is None
            else f"Recommended: {_e(name)}" + (" (fallback)" if rec.get("fallback") else ""))
    headline = rec.get("headline") or {}
    kpis = [(fmt_pct(headline.get(f"retained_{metric}")),
             f"test {metric_name(metric)} kept vs {rec.get('reference')}"),
            (fmt_ratio(headline.get("speedup")), f"speed-up at batch {rec.get('batch_size')}"),
            (fmt_ratio(headline.get("size_ratio")), "smaller on disk")]
    trade_offs = [t.get("sentence") for t in rec.get("trade_offs") or []]
    reasons = [r for r in rec.get("reasons") or [] if r not in trade_offs]
    return (f'<div class="verdict {kind}"><div><p class="ship">{ship}</p>'
            f'<p>{_e(rec.get("summary"))}</p>'
            + ('<div class="kpis">' + "".join(f"<div class=\"kpi\"><b>{_e(v)}</b><span>{_e(k)}"
                                              "</span></div>" for v, k in kpis) + "</div>"
               if name else "")
            + ("<h3>Trade-off</h3><ul>" + "".join(f"<li>{_e(t)}</li>" for t in trade_offs)
               + "</ul>" if trade_offs else "")
            + "</div><div><h3>Why</h3><ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons)
            + f'</ul><p class="sub">Rule: {_e(rec.get("rule"))}</p></div></div>')


def _warnings(data: Mapping[str, Any]) -> str:
    notes = data.get("notes") or []
    if not notes:
        return ""
    return ('<div class="warnings"><b>Warnings</b><ul>'
            + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></div>")


# ---------------------------------------------------------------------------------------------
# charts


def _charts(data: Mapping[str, Any]) -> str:
    metric = _metrics(data)[0]
    figures = [
        (_quality_chart(data, metric),
         "Test score against p50 latency on each target; the dashed line joins the Pareto "
         "front (no other artifact is both faster and better)."),
        (_latency_chart(data),
         "Whisker: min to max; box: p50 to p95; thick bar: p50; thin ticks: p90 and p99."),
        (_training_chart(data, "train_loss", "Training loss per epoch", "training loss"),
         "Teacher fine-tuning and distillation, each phase its own line."),
        (_training_chart(data, f"validation_{metric}",
                         f"Validation {metric_name(metric)} per epoch",
                         f"validation {metric_name(metric)}"
                         + (" (fraction)" if metric in ("accuracy", "macro_f1") else "")),
         "The best epoch of the last phase is the checkpoint that was kept."),
        (_size_chart(data), "Bytes needed to run each artifact (bench), else its model file."),
    ]
    return _section("Charts", '<div class="grid">' + "".join(
        f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"
        for svg, caption in figures) + "</div>", "charts")


def _quality_chart(data: Mapping[str, Any], metric: str) -> str:
    pareto = data.get("pareto") or {}
    bs = pareto.get("batch_size")
    points = [charts.Point(str(p["artifact"]), p["p50_ms"], p[metric], bool(p.get("on_front")))
              for p in pareto.get("points") or []]
    unit = " (fraction)" if metric in ("accuracy", "macro_f1") else ""
    return charts.scatter("quality-vs-latency", points,
                          title=f"Test {metric_name(metric)} vs latency (batch {bs})",
                          x_label=f"p50 latency at batch {bs} (ms)",
                          y_label=f"test {metric_name(metric)}{unit}")


def _latency_chart(data: Mapping[str, Any]) -> str:
    bs = str(dig(data, "recommendation", "batch_size"))
    rows = []
    for row in data.get("artifacts") or []:
        s = dig(row, "latency", bs) or {}
        values = [s.get(k) for k in ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")]
        if all(isinstance(v, (int, float)) for v in values):
            rows.append(charts.Spread(str(row["name"]), *values))
    return charts.spreads("latency-distribution", rows,
                          title=f"Latency distribution per artifact (batch {bs})",
                          x_label=f"latency per batch of {bs} (ms)")


def _size_chart(data: Mapping[str, Any]) -> str:
    items = [(str(row["name"]), row["size_bytes"] / 2**20, fmt_bytes(row["size_bytes"]))
             for row in data.get("artifacts") or []
             if isinstance(row.get("size_bytes"), int) and "@" not in str(row["name"])]
    return charts.bars("size", items, title="Size per artifact", x_label="size (MiB)")


def _training_chart(data: Mapping[str, Any], key: str, title: str, y_label: str) -> str:
    series = []
    for stage in ("teacher", "distill"):
        history = dig(data, "training", stage, "history") or []
        phases: dict[str, list[tuple[float, float]]] = {}
        for h in history:
            if isinstance(h.get("epoch"), (int, float)) and isinstance(h.get(key), (int, float)):
                phases.setdefault(str(h.get("phase") or ""), []).append((h["epoch"], h[key]))
        label = "teacher" if stage == "teacher" else "student"
        series += [charts.Series(f"{label} {phase}".strip(), points)
                   for phase, points in phases.items()]
    return charts.lines(f"training-{'loss' if key == 'train_loss' else 'validation'}", series,
                        title=title, x_label="epoch", y_label=y_label, integer_x=True)


# ---------------------------------------------------------------------------------------------
# tables


def _value(value: float | None, metric: str, primary: str) -> str:
    return fmt_metric(value, metric) if metric == primary else fmt_num(value, 4)


def _artifacts(data: Mapping[str, Any]) -> str:
    recommended = dig(data, "recommendation", "artifact")
    ref = _e(data.get("reference"))
    metrics = _metrics(data)
    header = ["Artifact", "Target", "Runtime", "Precision",
              f"Test {escape(metric_name(metrics[0]))}",
              *[escape(metric_title(m)) for m in metrics[1:]], f"Retained vs {ref}",
              "Size", f"Size ratio vs {ref}", "Parameters", "Load peak RSS",
              "Inference peak RSS", f"Memory ratio vs {ref}"]
    rows, classes = [], []
    for row in data.get("artifacts") or []:
        ratios = row.get("vs_reference") or {}
        memory = row.get("memory") or {}
        rows.append([_e(row["name"]), _e(row.get("target")), _e(row.get("runtime")),
                     _e(row.get("precision")),
                     *[_value(dig(row, "test", m), m, metrics[0]) for m in metrics],
                     fmt_pct(row.get(f"retained_{metrics[0]}")), fmt_bytes(row.get("size_bytes")),
                     fmt_ratio(ratios.get("size_ratio")), fmt_int(row.get("parameters")),
                     fmt_bytes(memory.get("load_peak_rss_bytes")),
                     fmt_bytes(memory.get("inference_peak_rss_bytes")),
                     fmt_ratio(ratios.get("memory_ratio"))])
        classes.append("recommended" if row["name"] == recommended else "")
    return _section("Artifacts", "<p>Quality is on the test split, each artifact through its own "
                    f"runtime. Ratios read {ref} / artifact, so above 1 is better.</p>"
                    + _table(header, rows, text_cols=4, row_classes=classes), "artifacts")


def _latency(data: Mapping[str, Any]) -> str:
    sizes = [str(bs) for bs in data.get("batch_sizes") or []]
    bench = data.get("benchmark") or {}
    if not sizes:
        return _section("Latency", f"<p>No benchmark numbers in this run ({NA}).</p>", "latency")
    header = ["Artifact", "Batch", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "min ms", "max ms",
              "samples/s", f"Speed-up vs {_e(data.get('reference'))}", "Runs"]
    rows = []
    for row in data.get("artifacts") or []:
        if not row.get("latency"):  # not benchmarked: said once below, not as rows of n/a
            continue
        for bs in sizes:
            s = dig(row, "latency", bs) or {}
            rows.append([_e(row["name"]), bs, *[fmt_num(s.get(k)) for k in (
                "p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms")],
                fmt_num(s.get("throughput_samples_per_s"), 1),
                fmt_ratio(dig(row, "vs_reference", "speedup", bs)), fmt_int(s.get("runs"))])
    unmeasured = [f"{_e(row['name'])}" + (f" ({_e(row['bench_skipped'])})"
                                           if row.get("bench_skipped") else "")
                  for row in data.get("artifacts") or [] if not row.get("latency")]
    body = (f"<p>Milliseconds per batch at sequence length {fmt_int(bench.get('sequence_length'))}"
            f" with {fmt_int(bench.get('threads'))} threads.</p>" + _table(header, rows)
            + (f"<p class=\"sub\">Not benchmarked: {'; '.join(unmeasured)}.</p>"
               if unmeasured else ""))
    sweep = bench.get("sweep") or []
    if sweep:
        body += "<h3>Sweep</h3>" + _table(
            ["Artifact", "Threads", "Sequence length", "Batch", "p50 ms", "p95 ms", "samples/s"],
            [[_e(p["artifact"]), fmt_int(p.get("threads")), fmt_int(p.get("sequence_length")),
              fmt_int(p.get("batch_size")), fmt_num(p.get("p50_ms")), fmt_num(p.get("p95_ms")),
              fmt_num(p.get("throughput_samples_per_s"), 1)] for p in sweep])
    return _section("Latency", body, "latency")


def _per_class(data: Mapping[str, Any]) -> str:
    per_class = data.get("per_class")
    if not per_class:
        return ""
    labels = per_class.get("labels") or []
    header = ["Artifact", "Label", "Support", "Precision", "Recall", "F1"]
    rows = []
    for row in _quality_rows(data):
        pc = dig(row, "test", "per_class") or {}
        for i, label in enumerate(labels):
            rows.append([_e(row["name"]), _e(label), fmt_int(_at(pc.get("support"), i)),
                         *[fmt_num(_at(pc.get(k), i), 4) for k in ("precision", "recall", "f1")]])
    return _section("Per-class precision, recall and F1 (test)",
                    _table(header, rows, text_cols=2), "per-class")


def _quality_rows(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Artifacts with their own test scores: a MODEL@TARGET row scores as MODEL's file does."""
    return [row for row in data.get("artifacts") or [] if "@" not in str(row["name"])
            and row.get("test")]


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) and i < len(values) else None


def _confusion(data: Mapping[str, Any]) -> str:
    labels = dig(data, "per_class", "labels") or []
    blocks = []
    for row in _quality_rows(data):
        matrix = dig(row, "test", "confusion")
        if not isinstance(matrix, list) or not matrix:
            continue
        names = labels if len(labels) == len(matrix) else [str(i) for i in range(len(matrix))]
        blocks.append(f"<div><h3>{_e(row['name'])}</h3>" + _table(
            ["gold \\ predicted", *[_e(n) for n in names]],
            [[_e(names[i]), *[fmt_int(v) for v in line]] for i, line in enumerate(matrix)])
            + "</div>")
    if not blocks:
        return ""
    return _section("Confusion matrices (test)",
                    '<div class="confusions">' + "".join(blocks) + "</div>", "confusion")


def _disagreements(data: Mapping[str, Any]) -> str:
    found = data.get("disagreements")
    if not found:
        return ""
    examples = found.get("examples") or []
    regression = any(e.get("gap") is not None for e in examples)
    if regression:
        intro = (f"The {len(examples)} test examples with the largest gap between the teacher's "
                 "and the student's ONNX scores.")
        header = ["Text", "Gold", "Teacher", "Student", "Gap"]
        rows = [[_text(e), _e(e.get("gold")), fmt_num(e.get("teacher"), 4),
                 fmt_num(e.get("student"), 4), fmt_num(e.get("gap"), 4)] for e in examples]
    else:
        intro = (f"The teacher's and the student's ONNX models disagree on "
                 f"{fmt_int(found.get('count'))} of {fmt_int(found.get('examples_total'))} test "
                 f"examples ({fmt_pct(found.get('rate'))}); the ones below are those the teacher "
                 "was most confident about.")
        header = ["Text", "Gold", "Teacher (confidence)", "Student (confidence)"]
        rows = [[_text(e), _e(e.get("gold")),
                 f"{_e(e.get('teacher'))} ({fmt_pct(e.get('teacher_confidence'))})",
                 f"{_e(e.get('student'))} ({fmt_pct(e.get('student_confidence'))})"]
                for e in examples]
    return _section("Where teacher and student disagree",
                    f"<p>{intro}</p>" + _table(header, rows, text_cols=2, wrap=0),
                    "disagreements")


def _generation(data: Mapping[str, Any]) -> str:
    header, rows = generation_rows(data)
    if not rows:
        return ""
    return _section("Generation speed", "<p>Greedy decoding of a fixed number of new tokens per "
                    "sequence, p50 over runs; time to first token is a generate call of one "
                    "token.</p>" + _text_table(header, rows), "generation")


def _generations(data: Mapping[str, Any]) -> str:
    header, rows = generation_examples(data)
    if not rows:
        return ""
    return _section("Example generations (test)", "<p>The first test sources (cut), their gold "
                    "target, and each ONNX model's greedy output.</p>"
                    + _text_table(header, rows, text_cols=len(header), wrap=0), "generations")


def _text(example: Mapping[str, Any]) -> str:
    pair = example.get("text_pair")
    return _e(example.get("text")) + ("" if pair is None else f"<br><i>pair:</i> {_e(pair)}")


def _parity(data: Mapping[str, Any]) -> str:
    models = dig(data, "export", "models")
    if not models:
        return _section("Export parity", f"<p>No export in this run ({NA}).</p>", "parity")
    metric = _metrics(data)[0]
    header = ["Model", "Path", "Opset", "Max abs diff", "atol", "Result",
              f"ONNX test {escape(metric_name(metric))}",
              f"PyTorch test {escape(metric_name(metric))}", "Change"]
    rows = [[_e(name), _e(m.get("path")), fmt_int(m.get("opset")), fmt_sci(m.get("max_abs_diff")),
             fmt_sci(m.get("atol")), fmt_bool(m.get("passed"), "pass", "FAIL"),
             fmt_metric(m.get(f"test_{metric}"), metric),
             fmt_metric(m.get(f"pytorch_test_{metric}"), metric),
             fmt_metric_delta(m.get(f"{metric}_delta_vs_pytorch"), metric)]
            for name, m in models.items()]
    return _section("Export parity", _table(header, rows, text_cols=2), "parity")


def _quantization(data: Mapping[str, Any]) -> str:
    models = dig(data, "quantization", "models")
    if not models:
        return _section("Quantization", f"<p>No quantized model in this run ({NA}).</p>",
                        "quantization")
    metrics = _metrics(data)
    body = ""
    for name, q in models.items():
        gate = q.get("gate") or {}
        if gate.get("passed") is None:
            gate_text = "off"
        elif gate.get("passed"):
            gate_text = (f"passed (max drop {_e(gate.get('max_drop'))}"
                         + (", after a fallback)" if gate.get("fallback_used") else ")"))
        else:
            gate_text = f"FAILED: {_e(gate.get('reason'))}"
        body += f"<h3>{_e(name)}</h3>" + _facts([
            ("source", _e(q.get("source"))), ("path", _e(q.get("path"))),
            ("mode", _e(q.get("mode"))), ("preset", _e(q.get("preset"))),
            ("per-channel", fmt_bool(q.get("per_channel"))),
            ("graph optimization", _e(q.get("optimization"))),
            ("MatMuls quantized", f"{fmt_int(q.get('matmul_int8'))} of "
                                  f"{fmt_int(q.get('matmul_total'))}"),
            ("validation gate", gate_text),
            ("size", f"{fmt_bytes(q.get('fp32_bytes'))} → {fmt_bytes(q.get('bytes'))} "
                     f"({fmt_ratio(q.get('size_ratio'))} smaller)"),
            *[(f"test {escape(metric_name(m))}",
               f"{_value(q.get(f'fp32_test_{m}'), m, metrics[0])} → "
               f"{_value(q.get(f'test_{m}'), m, metrics[0])} "
               f"({fmt_metric_delta(q.get(f'{m}_delta'), m)})") for m in metrics]])
        attempts = q.get("attempts") or []
        if attempts:
            body += _table(["Attempt", "Quantization", "Validation", "Drop", "Passed", "Size",
                            "Batch-1 p50 (in-process)"],
                           [[_e(a.get("step")), _e(a.get("label")), fmt_num(a.get("validation"), 4),
                             fmt_num(a.get("drop"), 4), fmt_bool(a.get("passed")),
                             fmt_bytes(a.get("bytes")), fmt_ms(a.get("batch1_p50_ms"))]
                            for a in attempts], text_cols=2)
    return _section("Quantization attempts and gate", body, "quantization")


def _training(data: Mapping[str, Any]) -> str:
    metric = _metrics(data)[0]
    teacher, distill = dig(data, "training", "teacher"), dig(data, "training", "distill")
    body = "<h3>Teacher</h3>"
    if teacher:
        body += _facts([
            ("model", _e(teacher.get("model"))),
            ("fine-tuned here", fmt_bool(teacher.get("fine_tuned"))),
            ("from cache", fmt_bool(teacher.get("cache_hit"))),
            ("parameters", fmt_int(teacher.get("parameters"))),
            (f"validation / test {escape(metric_name(metric))}", _pair(teacher, metric)),
            ("training processes", _e(fmt_processes(teacher.get("processes")))),
            ("stage time", f"{fmt_num(teacher.get('duration_s'), 1)} s")])
        body += _history(teacher.get("history") or [], None, metric)
    else:
        body += f"<p>No teacher stage in this run ({NA}).</p>"
    body += "<h3>Distillation</h3>"
    if distill:
        student = distill.get("student") or {}
        body += _facts([
            ("recipe", _e(distill.get("recipe"))),
            ("temperature / alpha", f"{fmt_num(distill.get('temperature'))} / "
                                    f"{fmt_num(distill.get('alpha'))}"),
            ("student", _e(student.get("source"))),
            ("teacher layers kept", _e(", ".join(str(x) for x in student.get("layers") or [])
                                       or None)),
            ("layers / hidden size", f"{fmt_int(student.get('num_layers'))} / "
                                     f"{fmt_int(student.get('hidden_size'))}"),
            ("parameters", f"{fmt_int(student.get('parameters'))} "
                           f"({fmt_ratio(distill.get('parameter_ratio'))} fewer than the teacher)"),
            ("best epoch", fmt_int(distill.get("best_epoch"))),
            (f"validation / test {escape(metric_name(metric))}", _pair(distill, metric)),
            ("reload max abs diff", fmt_sci(distill.get("reload_max_abs_diff"))),
            ("training processes", _e(fmt_processes(distill.get("processes")))),
            ("stage time", f"{fmt_num(distill.get('duration_s'), 1)} s")])
        body += _history(distill.get("history") or [], distill.get("best_epoch"), metric)
        header, rows = lifelong_rows(distill.get("lifelong"))
        if rows:
            body += ("<h3>The lifelong stream</h3><p>Test ROUGE-L of every task after each step "
                     "of the stream, against each task's own teacher and one model trained on "
                     "every task at once.</p>" + _text_table(header, rows))
    else:
        body += f"<p>No distillation stage in this run ({NA}).</p>"
    return _section("Training", body, "training")


def _pair(stage: Mapping[str, Any], metric: str) -> str:
    return (f"{fmt_metric(stage.get(f'validation_{metric}'), metric)} / "
            f"{fmt_metric(stage.get(f'test_{metric}'), metric)}")


def _history(history: list[Mapping[str, Any]], best_epoch: int | None, metric: str) -> str:
    if not history:
        return f"<p>No per-epoch history ({NA}).</p>"
    last_phase = history[-1].get("phase")
    header = ["Phase", "Epoch", "Train loss", f"Validation {escape(metric_name(metric))}",
              "Seconds", "Examples/s"]
    rows = [[_e(h.get("phase") or "-"),
             _e(h.get("epoch")) + (" (best)" if h.get("epoch") == best_epoch
                                    and h.get("phase") == last_phase else ""),
             fmt_num(h.get("train_loss"), 4), fmt_metric(h.get(f"validation_{metric}"), metric),
             fmt_num(h.get("seconds"), 1), fmt_num(h.get("examples_per_s"), 1)] for h in history]
    return _table(header, rows)


def _data(data: Mapping[str, Any]) -> str:
    info = data.get("data")
    if not info:
        return _section("Data", f"<p>No data stage in this run ({NA}).</p>", "data")
    splits = info.get("splits") or {}
    body = _facts([("source", f"<code>{_e(json.dumps(info.get('source'), ensure_ascii=False))}"
                              "</code>"),
                   ("task", _e(data.get("task"))),
                   ("splits", ", ".join(f"{_e(k)}: {fmt_int(v)}" for k, v in splits.items())
                    or NA),
                   ("labels", fmt_int(info.get("num_labels")))])
    counts = info.get("label_counts")
    if isinstance(counts, Mapping) and counts:
        names = list(splits) or list(counts)
        body += _table(["Label", *[_e(n) for n in names]],
                       [[_e(label), *[fmt_int(dig(counts, s, label)) for s in names]]
                        for label in info.get("labels") or []])
    stats = info.get("label_stats")
    if isinstance(stats, Mapping):
        body += _table(["Split", "Score mean", "Score std", "Score min", "Score max"],
                       [[_e(split), *[fmt_num(dig(v, k), 4) for k in ("mean", "std", "min", "max")]]
                        for split, v in stats.items()])
    return _section("Data", body, "data")


def _environment(data: Mapping[str, Any]) -> str:
    env = data.get("environment") or {}
    bench = data.get("benchmark") or {}
    cpu = env.get("cpu") or {}
    body = _facts([
        ("measured on (stage)", _e(env.get("stage"))),
        ("CPU", f"{_e(cpu.get('model'))} ({_e(cpu.get('arch'))})"),
        ("ISA flags", ", ".join(f"{_e(k)} {fmt_bool(v)}" for k, v in (cpu.get("isa") or {}).items())
         or NA),
        ("cores", f"{fmt_int(cpu.get('physical_cores'))} physical, "
                  f"{fmt_int(cpu.get('logical_cores'))} logical"),
        ("RAM", fmt_bytes(cpu.get("ram_bytes"))),
        ("OS", _e(env.get("os"))), ("Python", _e(env.get("python"))),
        ("packages", ", ".join(f"{_e(k)} {_e(v)}" for k, v in (env.get("packages") or {}).items())
         or NA),
        ("bench threads", fmt_int(bench.get("threads"))),
        ("sequence length", fmt_int(bench.get("sequence_length"))),
        ("batch sizes", ", ".join(fmt_int(b) for b in bench.get("batch_sizes") or []) or NA),
        ("targets", ", ".join(_e(t) for t in bench.get("targets") or []) or NA),
        ("benchmark protocol", ", ".join(f"{_e(k)} {_e(v)}" for k, v in
                                         (bench.get("protocol") or {}).items()) or NA),
    ])
    added = data.get("added_targets") or []
    if added:
        body += "<h3>Benchmarks added from other devices</h3>" + _table(
            ["Target", "CPU", "OS", "Models"],
            [[_e(t["target"]), f"{_e(t.get('cpu_model'))} ({_e(t.get('arch'))})", _e(t.get("os")),
              _e(", ".join(t.get("models") or []))] for t in added], text_cols=4)
    return _section("Environment", body, "environment")


def _reproducibility(data: Mapping[str, Any]) -> str:
    repro = data.get("reproducibility") or {}
    body = _facts([("seed", _e(repro.get("seed"))),
                   ("config", f"<code>{_e(repro.get('config_path'))}</code>"),
                   ("kdedge git sha", _e(repro.get("kdedge_git_sha"))),
                   ("report written by kdedge", _e(repro.get("report_kdedge_version"))),
                   ("reproduce", "<code>kdedge compress --config RUN_DIR/"
                                 f"{_e(repro.get('config_path'))}</code> from where the run was "
                                 "started")])
    rows = [[_e(name), f"<code>{_e((s or {}).get('fingerprint'))}</code>",
             _e((s or {}).get("status")), fmt_num((s or {}).get("duration_s"), 1),
             _e((s or {}).get("started_at"))]
            for name, s in (repro.get("stages") or {}).items()]
    return _section("Reproducibility", body + _table(
        ["Stage", "Fingerprint", "Status", "Seconds", "Started"], rows, text_cols=3),
        "reproducibility")


# ---------------------------------------------------------------------------------------------
# several runs side by side


@COMPARISON_FORMATS.register("html")
def render_comparison_html(data: Mapping[str, Any]) -> str:
    """Runs side by side: verdicts, a chart of each run's artifacts, one column group per run."""
    runs = data.get("runs") or []
    metric = data.get("primary_metric") or ""
    header = ["Run", "Recipe", "Student", "Targets", "Recommended", "Retained", "Speed-up",
              "Size ratio", "Speed vs baseline", "Size vs baseline", "Score change vs baseline"]
    rows = [[_e(r["name"]), _e(r.get("recipe")), _e(r.get("student")),
             _e(", ".join(r.get("targets") or []) or None),
             _e(r.get("recommended")) + (" (fallback)" if r.get("fallback") else ""),
             fmt_pct(dig(r, "headline", f"retained_{r.get('primary_metric')}")),
             fmt_ratio(dig(r, "headline", "speedup")), fmt_ratio(dig(r, "headline", "size_ratio")),
             fmt_ratio(dig(r, "vs_baseline", "speedup")),
             fmt_ratio(dig(r, "vs_baseline", "size_ratio")),
             fmt_metric_delta(dig(r, "vs_baseline", "score_delta"), metric)] for r in runs]
    body = _section("Verdicts", _table(header, rows, text_cols=5) + "<ul>" + "".join(
        f"<li><b>{_e(r['name'])}</b>: {_e(r.get('summary'))}</li>" for r in runs) + "</ul>",
        "verdicts")
    points = [charts.Point(f"{r['name']}: {a['name']}", a["p50_ms"], a["test_score"],
                           bool(a.get("recommended")))
              for r in runs for a in r.get("artifacts") or []
              if isinstance(a.get("p50_ms"), (int, float))
              and isinstance(a.get("test_score"), (int, float)) and "@" not in a["name"]]
    chart = charts.scatter("runs-quality-vs-latency", points,
                           title=f"Test {metric_name(metric)} vs p50 latency, every run",
                           x_label="p50 latency at each run's ranking batch (ms)",
                           y_label=f"test {metric_name(metric)}", front_label="recommended")
    body += _section("Chart", f'<figure class="single">{chart}<figcaption>Each run\'s CPU '
                     "artifacts; the recommended ones are blue, joined by the dashed line."
                     "</figcaption></figure>", "chart")
    names = list(dict.fromkeys(a["name"] for r in runs for a in r.get("artifacts") or []))
    top = "<tr><th></th>" + "".join(f'<th colspan="5">{_e(r["name"])}</th>' for r in runs) + "</tr>"
    sub = "<tr><th class=\"text\">Artifact</th>" + "".join(
        f"<th>Test {escape(metric_name(r.get('primary_metric') or ''))}</th>"
        f"<th>p50 ms @{fmt_int(r.get('batch_size'))}</th><th>Speed-up</th><th>Size</th>"
        "<th>Size ratio</th>" for r in runs) + "</tr>"
    body_rows = []
    for name in names:
        cells = [f'<td class="text">{_e(name)}</td>']
        for r in runs:
            a = next((a for a in r.get("artifacts") or [] if a["name"] == name), {})
            cls = ' class="good"' if a.get("recommended") else ""
            cells += [f"<td{cls}>{fmt_metric(a.get('test_score'), r.get('primary_metric') or '')}"
                      + (" ✔" if a.get("recommended") else "") + "</td>",
                      f"<td>{fmt_num(a.get('p50_ms'))}</td>", f"<td>{fmt_ratio(a.get('speedup'))}</td>",
                      f"<td>{fmt_bytes(a.get('size_bytes'))}</td>",
                      f"<td>{fmt_ratio(a.get('size_ratio'))}</td>"]
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    body += _section("Artifacts per run", "<p>✔ marks each run's recommended artifact; ratios "
                     "are against that run's own reference.</p>"
                     f'<div class="scroll"><table><thead>{top}{sub}</thead><tbody>'
                     + "".join(body_rows) + "</tbody></table></div>", "artifacts")
    return page("kdedge run comparison", body,
                f"{len(runs)} runs; baseline {_e(data.get('baseline'))} (the first named)")
