"""The bundle's model card (README.md): what the model is, how it was made, how good and how
fast it measured, how to run it, and where it stops working.

Every number is read from the report's data (report.json) or the bundle's own metadata and
printed with the report's formatting helpers, so the card and the report show the same values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdedge import tasks
from kdedge.bundle.web import KDEDGE_MODEL_TYPE_PREFIX
from kdedge.report.formatting import (
    NA,
    dig,
    fmt_bool,
    fmt_bytes,
    fmt_int,
    fmt_metric,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_ratio,
    metric_name,
)


def render_card(report: Mapping[str, Any], meta: Mapping[str, Any],
                labels: Mapping[str, Any]) -> str:
    """The whole card as Markdown."""
    rows = {row["name"]: row for row in report.get("artifacts", [])}
    name, reference = meta["artifact"], report.get("reference")
    row, ref = rows.get(name, {}), rows.get(reference, {})
    sections = [
        _title(name, meta, labels),
        _what(row, meta, labels, dig(report, "training")),
        _how_made(report, meta),
        _accuracy(report, row, ref, name),
        _speed(report, row, name),
        _how_to_run(meta, labels),
        _where_it_runs(meta),
        _limits(report, meta, labels),
    ]
    return "\n\n".join(s.rstrip() for s in sections) + "\n"



def _cell(value: Any) -> str:
    """User text in a table cell: pipes escaped, newlines flattened."""
    return NA if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def source_name(source: Any) -> str:
    """The data source in a few words: the demo's or hub dataset's name, or the local files
    with the start of their sha256."""
    if not isinstance(source, Mapping):
        return NA if source is None else str(source)
    if source.get("name"):
        config = f" ({source['config']})" if source.get("config") else ""
        return f"{source['name']}{config}"
    files = source.get("files") or {}
    named = [f"{Path(str(f.get('path'))).name} (sha256 {str(f.get('sha256'))[:12]})"
             for f in files.values() if isinstance(f, Mapping)]
    return ", ".join(dict.fromkeys(named)) or str(dict(source))


def _generator(meta: Mapping[str, Any]) -> bool:
    return bool(meta.get("generation"))


def _script(meta: Mapping[str, Any]) -> str:
    return str(meta.get("script") or "predict.py")


def _kind(meta: Mapping[str, Any], labels: Mapping[str, Any]) -> tasks.TaskKind:
    return tasks.get(str(meta.get("task") or labels.get("task") or "classification"))


def _title(name: str, meta: Mapping[str, Any], labels: Mapping[str, Any]) -> str:
    kind = _kind(meta, labels)
    what = kind.card_title.format(kind=kind.name, classes=len(labels.get("labels", [])))
    pairs = " over sentence pairs" if len(labels.get("text_columns", [])) == 2 else ""
    parts = "its ONNX graphs" if _generator(meta) else "an ONNX model"
    return (f"# {name}: {what}{pairs}\n\n"
            f"A deployment bundle written by kdedge {meta.get('kdedge_version')}: {parts} "
            f"({meta.get('precision')}), its tokenizer, its label map, a `{_script(meta)}` that "
            "needs only onnxruntime, numpy and tokenizers, and this card. The numbers below were "
            "measured by the kdedge run that made it (see its report).")


def _what(row: Mapping[str, Any], meta: Mapping[str, Any], labels: Mapping[str, Any],
          training: Any) -> str:
    teacher, distill = dig(training, "teacher") or {}, dig(training, "distill") or {}
    student = dig(distill, "student") or {}
    lines = ["## What it is", "", "| | |", "|---|---|",
             f"| Artifact | {_cell(meta['artifact'])} ({_cell(meta.get('precision'))} ONNX, "
             "onnxruntime CPU) |"]
    if row.get("family") == "teacher":
        lines.append(f"| Model | the teacher itself, {_cell(teacher.get('model'))} |")
    else:
        lines += [
            f"| Architecture | {fmt_int(student.get('num_layers'))} layers, hidden size "
            f"{fmt_int(student.get('hidden_size'))} (student: {_cell(student.get('source'))}) |",
            f"| Distilled from | {_cell(teacher.get('model'))} "
            f"({fmt_int(teacher.get('parameters'))} parameters; fine-tuned on this task: "
            f"{fmt_bool(teacher.get('fine_tuned'))}) |",
            f"| Recipe | {_cell(distill.get('recipe'))}, temperature "
            f"{fmt_num(distill.get('temperature'), 1)}, alpha {fmt_num(distill.get('alpha'), 2)} |",
        ]
    ratio = distill.get("parameter_ratio") if row.get("family") == "student" else None
    fewer = f" (the teacher has {fmt_ratio(ratio)} as many)" if ratio is not None else ""
    lines += [
        f"| Parameters | {fmt_int(row.get('parameters'))}{fewer} |",
        f"| Task | {_cell(meta.get('task'))} |",
    ]
    generation = meta.get("generation") or {}
    if generation:
        lines += [f"| Graphs | {_cell(', '.join(meta.get('graphs', [])))} (key/value cache or "
                  f"decoder state carried between steps: "
                  f"{fmt_bool(meta.get('key_value_cache'))}) |",
                  f"| Inputs | a source text; at most {fmt_int(meta.get('max_length'))} tokens |",
                  f"| Output | up to {fmt_int(generation.get('max_new_tokens'))} generated tokens "
                  f"and their text ({_cell(generation.get('search'))} search as measured) |"]
    else:
        lines += [f"| Labels | {_cell(', '.join(map(str, labels.get('labels', []))))} |",
                  f"| Inputs | {_cell(', '.join(meta.get('inputs', [])))}; at most "
                  f"{fmt_int(meta.get('max_length'))} tokens per input |",
                  f"| Output | `{_cell(meta.get('output'))}` |"]
    return "\n".join(lines)


def _how_made(report: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    data, repro = dig(report, "data") or {}, dig(report, "reproducibility") or {}
    splits = data.get("splits") or {}
    split_text = ", ".join(f"{k} {fmt_int(v)}" for k, v in splits.items()) or NA
    lines = [
        "## How it was made", "",
        f"- Data: {_cell(source_name(data.get('source')))} (examples per split: {split_text}).",
        *[f"- Paired views: the teacher read column `{_cell(views['teacher'])}`, the students "
          f"column `{_cell(views['student'])}`: give a student the kind of text in "
          f"`{_cell(views['student'])}`." for views in [data.get("views")] if views],
        f"- Command: `kdedge compress --config {meta.get('config')}` "
        "with the resolved config in this folder repeats the run.",
        f"- Seed {fmt_int(dig(meta, 'run', 'seed'))}; kdedge {_cell(meta.get('kdedge_version'))}"
        f"; source commit {_cell(repro.get('kdedge_git_sha'))}.",
        "", "| Stage | Fingerprint |", "|---|---|",
    ]
    fingerprints = dig(meta, "run", "fingerprints") or {}
    lines += [f"| {_cell(stage)} | `{_cell(fp)}` |" for stage, fp in fingerprints.items()]
    return "\n".join(lines)


def _accuracy(report: Mapping[str, Any], row: Mapping[str, Any], ref: Mapping[str, Any],
              name: str) -> str:
    metric = report.get("primary_metric") or "accuracy"
    reference = report.get("reference")
    title = "Accuracy" if metric == "accuracy" else "Quality"
    lines = [f"## {title}", "",
             "Measured through onnxruntime on the run's held-out splits (the test split was "
             "never used for training or model selection).", "",
             f"| Metric | {name} | {reference} (teacher) |", "|---|---|---|"]
    for split in ("test", "validation"):
        for m in report.get("quality_metrics") or [metric]:
            lines.append(f"| {split.capitalize()} {metric_name(m)} | "
                         f"{fmt_metric(dig(row, split, m), m)} | "
                         f"{fmt_metric(dig(ref, split, m), m)} |")
    lines.append(f"| Test examples | {fmt_int(dig(row, 'test', 'examples'))} | "
                 f"{fmt_int(dig(ref, 'test', 'examples'))} |")
    lines += ["", *_how_measured(row, metric), "",
              f"It keeps {fmt_pct(row.get(f'retained_{metric}'))} of the teacher's test "
              f"{metric_name(metric)}."]
    gate = row.get("quantization_gate")
    if gate:
        lines[-1] += (f" Quantization gate: {'passed' if gate.get('passed') else 'failed'}"
                      f" ({_cell(gate.get('reason'))}).")
    return "\n".join(lines)


def _how_measured(row: Mapping[str, Any], metric: str) -> list[str]:
    """Which way of calling the model the numbers above hold for, and the other way's result."""
    evaluation, batched = row.get("evaluation") or {}, row.get("batched") or {}
    if evaluation.get("batch_size") != 1:
        return []
    size, name_ = batched.get("batch_size"), metric_name(metric)
    line = ("These numbers are for one text per call (no padding): what `predict(\"one text\")` "
            "and most apps get.")
    if not batched:
        return [line]
    if batched.get("differs"):
        return [f"{line} Called with {fmt_int(size)} texts at once, padded to the longest (the "
                f"default of `python predict.py` for many texts), the test {name_} is "
                f"{fmt_metric(dig(batched, 'test', metric), metric)} and the validation {name_} "
                f"{fmt_metric(dig(batched, 'validation', metric), metric)}"
                + (": dynamic int8 scales activations per batch, so a prediction can depend on "
                   "the other texts of its batch. The quantization gate judged the worse of the "
                   "two." if row.get("precision") == "int8" else
                   " (padding changes floating-point sums slightly).")]
    return [f"{line} Called with {fmt_int(size)} texts at once, padded, it scores the same."]


def _speed(report: Mapping[str, Any], row: Mapping[str, Any], name: str) -> str:
    bench, env = dig(report, "benchmark") or {}, dig(report, "environment") or {}
    cpu = env.get("cpu") or {}
    lines = ["## Speed", "",
             f"Measured by the run's bench stage on {_cell(cpu.get('model'))} "
             f"(threads: {fmt_int(bench.get('threads'))}, sequence length "
             f"{fmt_int(bench.get('sequence_length'))}, each model in its own process). "
             "Your machine will differ: measure it with `kdedge bench` (below).", "",
             "| Batch | p50 | p90 | p99 | Throughput (samples/s) | Speed-up vs teacher |",
             "|---|---|---|---|---|---|"]
    speedup = dig(row, "vs_reference", "speedup") or {}
    for batch, stats in (row.get("latency") or {}).items():
        lines.append(f"| {batch} | {fmt_ms(stats.get('p50_ms'))} | {fmt_ms(stats.get('p90_ms'))} "
                     f"| {fmt_ms(stats.get('p99_ms'))} | "
                     f"{fmt_num(stats.get('throughput_samples_per_s'), 1)} | "
                     f"{fmt_ratio(speedup.get(batch))} |")
    if not row.get("latency"):
        lines.append(f"| {NA} | {NA} | {NA} | {NA} | {NA} | {NA} |")
    memory = row.get("memory") or {}
    lines += ["",
              f"- Size on disk (model and tokenizer): {fmt_bytes(row.get('size_bytes'))}; the "
              f"teacher's is {fmt_ratio(dig(row, 'vs_reference', 'size_ratio'))} that.",
              f"- Peak memory while predicting (resident set): "
              f"{fmt_bytes(memory.get('inference_peak_rss_bytes'))}.",
              f"- The report's verdict: {_cell(dig(report, 'recommendation', 'summary'))}"]
    verdicts = dig(report, "recommendation", "per_target") or []
    if verdicts:
        lines += ["- What to ship on each target measured (`kdedge report RUN --add-bench` adds a "
                  "device and rewrites this card):",
                  *[f"  - {_cell(v.get('sentence'))}" for v in verdicts]]
    return "\n".join(lines)


def _how_to_run(meta: Mapping[str, Any], labels: Mapping[str, Any]) -> str:
    pair = len(labels.get("text_columns", [])) == 2
    example = '"first sentence\tsecond sentence"' if pair else '"some text"'
    script = _script(meta)
    module = Path(script).stem  # predict or generate: its function has the module's name
    what = (_kind(meta, labels).card_output.format(output=meta.get("output"))
            + f" In Python: `from {module} import {module}; {module}([\"some text\"])`."
            + (" A sentence pair is one input written as `text<TAB>pair`." if pair else ""))
    return "\n".join([
        "## How to run", "",
        "```bash",
        "pip install onnxruntime numpy tokenizers",
        f"python {script} {example}",
        f"python {script} - < {meta.get('sample_texts')}   # one text per line",
        "```", "",
        "Each input gives one JSON line: " + what,
        "",
        "To measure speed on the device that will run it (needs no torch):",
        "",
        "```bash",
        'pip install "kdedge[runtime]"',
        "kdedge bench . --output bench-results.json",
        "```",
    ])


def _where_it_runs(meta: Mapping[str, Any]) -> str:
    """Every runtime that loads this bundle, and plainly the ones that cannot and why."""
    web, mobile = meta.get("web") or {}, meta.get("mobile") or {}
    model_type = meta.get("model_type")
    own = str(model_type).startswith(KDEDGE_MODEL_TYPE_PREFIX)
    lines = ["## Where it runs", "", "| Runtime | Loads it | How |", "|---|---|---|"]
    if _generator(meta):
        lines.append("| Python, onnxruntime | yes | `generate.py` (above) |")
    else:
        lines.append("| Python, onnxruntime | yes | `predict.py` (above), or any onnxruntime "
                     f"client that feeds {_cell(', '.join(meta.get('inputs', [])))} from "
                     "tokenizer.json |")
    if own:
        lines.append(f"| Python, optimum / transformers | no | config.json says `model_type: "
                     f"{_cell(model_type)}`, kdedge's own architecture, which transformers "
                     "knows only inside a process that imported kdedge; use predict.py |")
    elif _generator(meta):
        family = ("ORTModelForSeq2SeqLM" if (meta.get("generation") or {}).get("layout") ==
                  "seq2seq" else "ORTModelForCausalLM")
        lines.append(f"| Python, optimum | yes | `{family}.from_pretrained(\".\")` and its "
                     "`generate` (needs torch and transformers) |")
    else:
        lines.append("| Python, optimum | yes | `ORTModelForSequenceClassification"
                     ".from_pretrained(\".\")`, then a transformers `pipeline` with this "
                     "folder's tokenizer |")
    if web.get("path"):
        lines.append("| JavaScript, transformers.js (browser, Node) | yes | `pipeline("
                     f"\"{web.get('pipeline')}\", \"web\")` with `env.localModelPath` set to this "
                     f"folder; dtypes {', '.join(web.get('dtypes', []))} (default "
                     f"{web.get('default_dtype')}) |")
    else:
        reason = web.get("skipped") or ("not written for generators yet" if _generator(meta)
                                        else "not written (bundle.web is off)")
        lines.append(f"| JavaScript, transformers.js | no | {_cell(reason)} |")
    if mobile.get("path"):
        lines.append(f"| Android / iOS, onnxruntime mobile | yes | `{mobile.get('model')}` "
                     f"(ORT format, onnxruntime {mobile.get('onnxruntime')}); a reduced build "
                     f"takes `{mobile.get('operators')}` |")
    else:
        reason = ("not written for generators yet" if _generator(meta)
                  else "not written (bundle.mobile is off)")
        lines.append(f"| Android / iOS, onnxruntime mobile | no | {reason} |")
    lines += ["", "Every runtime reads the same tokenizer.json; inputs are cut at "
                  f"{fmt_int(meta.get('max_length'))} tokens everywhere."]
    return "\n".join(lines)


def _limits(report: Mapping[str, Any], meta: Mapping[str, Any], labels: Mapping[str, Any]) -> str:
    data = dig(report, "data") or {}
    names = ", ".join(map(str, labels.get("labels", [])))
    lines = [
        "## Limits", "",
        f"- Inputs longer than {fmt_int(meta.get('max_length'))} tokens are cut there; the "
        "model never sees the rest.",
        "- " + _kind(meta, labels).card_limit.format(
            labels=names, max_new_tokens=fmt_int((meta.get("generation") or {}).get(
                "max_new_tokens"))),
        f"- {metric_name(report.get('primary_metric') or 'accuracy').capitalize()} was measured on "
        f"held-out data from {_cell(source_name(data.get('source')))}"
        " only; "
        "on other text it is unknown.",
        "- Speed depends on the CPU: int8 models are fast only with integer dot-product "
        "instructions (VNNI on x86, dot-product on ARM).",
    ]
    lines += [f"- {_cell(note)}" for note in report.get("notes") or []]
    lines += ["", "bundle.json lists the sha256 of every file in this folder."]
    return "\n".join(lines)
