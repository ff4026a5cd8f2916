"""The student search's parts on the built-in demo: vocabulary trimming, and the latency probe.

    python benchmarks/search.py [--out runs/search] [--only trim,probe] [--table-only]
    python benchmarks/search.py --search-run RUN_DIR   # a finished `kdedge compress` (student auto)

One data + teacher run is shared (the fine-tuned teacher comes from the user cache when it is
there). trim: the 3-layer kd student runs distill, export, quantize and a batch-1 bench twice,
with distill.vocabulary full and trim, the teacher ONNX benched in each run so every ratio is
measured in one run. probe: the candidate grid below, untrained, exported, quantized (dynamic
int8) and timed at batch 1 beside the teacher ONNX. Writes benchmarks/results/search.md.
--search-run adds (or replaces) the section on the search a default run did: every candidate,
its probed latency, its training and the winner, with the run's shipped test figures.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from methods import EPOCHS, summarize

RESULTS = Path(__file__).resolve().parent / "results" / "search.md"
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"distill.vocabulary": "full"},
    "trim": {"distill.vocabulary": "trim"},
}
# name -> (distill.student, distill.vocabulary); "teacher" is the teacher itself, the reference
PROBE_CANDIDATES = {
    "teacher": ("6", "full"),
    "cut-3": ("3", "full"),
    "cut-3-trim": ("3", "trim"),
    "cut-2-trim": ("2", "trim"),
    "narrow-4x256-trim": ("transformer:layers=4,hidden_size=256,heads=4", "trim"),
    "narrow-3x192-trim": ("transformer:layers=3,hidden_size=192,heads=3", "trim"),
    "bilstm-256-trim": ("bilstm:hidden_size=256,init_embeddings=true", "trim"),
    "bigru-256-trim": ("bigru:hidden_size=256,init_embeddings=true", "trim"),
}
COMMON = {"distill.student": "3", "distill.recipe": "kd", "distill.training.epochs": EPOCHS,
          "bench.models": ["teacher-onnx", "student-onnx", "student-int8"], "bench.batch_sizes": [1],
          "bench.min_duration_s": 3.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/search"))
    parser.add_argument("--only", default="trim,probe", help="comma-separated parts: trim, probe")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="trim part: full, trim or both")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="trim part: training epochs")
    parser.add_argument("--table-only", action="store_true", help="rewrite the tables from --out")
    parser.add_argument("--search-run", type=Path, help="a finished run whose distill stage "
                                                        "searched (distill.student auto)")
    args = parser.parse_args()
    if args.search_run:
        write_search_section(args.search_run)
        print(RESULTS.read_text())
        return
    if not args.table_only:
        from kdedge_cli.main import _setup_logging

        _setup_logging(logging.INFO)
        base = prepare_base(args.out / "base")
        parts = args.only.split(",")
        if "trim" in parts:
            run_trim(args.out, args.variants.split(","), args.epochs)
        if "probe" in parts:
            run_probe(base, args.out / "probe")
    write([trim_row(name, args.out / name) for name in VARIANTS if _finished(args.out / name)],
          probe_rows(args.out / "probe"))
    print(RESULTS.read_text())


def prepare_base(base_dir: Path) -> Any:
    """The shared data and teacher stages; returns their config."""
    from kdedge import pipeline
    from kdedge.config import build_config

    base = build_config(overrides={**COMMON, "run.out": str(base_dir)})
    pipeline.prepare_run(base, base_dir, resume=True, force=False)
    pipeline.run(base, base_dir, resume=True, only=("data", "teacher"))
    return base


def _finished(run_dir: Path) -> bool:
    from kdedge.pipeline import stage_dirname

    return (run_dir / stage_dirname("bench") / "manifest.json").is_file()


def run_trim(out: Path, variants: list[str], epochs: int) -> None:
    from kdedge import pipeline
    from kdedge.config import build_config

    base_dir = out / "base"
    for name in variants:
        run_dir = out / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(base_dir, run_dir)
        cfg = build_config(overrides={**COMMON, **VARIANTS[name], "distill.training.epochs": epochs,
                                      "run.out": str(run_dir)})
        pipeline.prepare_run(cfg, run_dir, resume=True, force=False)
        pipeline.run(cfg, run_dir, only=("distill", "export", "quantize", "bench"))


def run_probe(base: Any, out: Path) -> None:
    from kdedge.artifacts import MODEL_DIR
    from kdedge.bench.stage import MAX_TEXTS
    from kdedge.data.dataset import load_task
    from kdedge.pipeline import stage_dirname
    from kdedge.search.probe import CandidateSpec, ProbeSettings, probe

    task = load_task(base.run.out / stage_dirname("data"))
    candidates = [CandidateSpec(name, student, vocabulary)
                  for name, (student, vocabulary) in PROBE_CANDIDATES.items()]
    probe(candidates, base.run.out / stage_dirname("teacher") / MODEL_DIR, task.splits["train"].texts,
          task.splits["test"].texts[:MAX_TEXTS], out, ProbeSettings.from_config(base))


def probe_rows(out: Path) -> list[dict[str, Any]]:
    from kdedge.artifacts import read_json
    from kdedge.search.probe import RESULT_FILE

    return [read_json(out / name / RESULT_FILE)["result"] for name in PROBE_CANDIDATES
            if (out / name / RESULT_FILE).is_file()]


def trim_row(name: str, run_dir: Path) -> dict[str, Any]:
    """methods.py's summary of the run, plus the vocabulary and the fp32 ONNX size."""
    from kdedge.artifacts import Manifest
    from kdedge.pipeline import stage_dirname

    distill = Manifest.load(run_dir / stage_dirname("distill")).metrics
    bench = Manifest.load(run_dir / stage_dirname("bench")).metrics["models"]
    return {**summarize(name, run_dir), **test_pieces(run_dir),
            "vocabulary": distill["student"]["vocabulary"]["size"],
            "fp32_mb": bench["student-onnx"]["size_bytes"] / 1e6,
            "teacher_mb": bench["teacher-onnx"]["size_bytes"] / 1e6}


def test_pieces(run_dir: Path) -> dict[str, float]:
    """How the student's tokenizer splits the test texts: pieces per text, and the share of
    texts split otherwise than by the teacher's tokenizer."""
    from transformers import AutoTokenizer

    from kdedge.artifacts import MODEL_DIR, STUDENT_DIR
    from kdedge.data.dataset import load_task
    from kdedge.pipeline import stage_dirname

    texts = load_task(run_dir / stage_dirname("data")).splits["test"].texts
    teacher, student = (AutoTokenizer.from_pretrained(run_dir / stage_dirname(stage) / folder)
                        for stage, folder in (("teacher", MODEL_DIR), ("distill", STUDENT_DIR)))
    full = [teacher.tokenize(t) for t in texts]
    mine = [student.tokenize(t) for t in texts]
    return {"pieces_per_text": sum(map(len, mine)) / len(texts),
            "changed": sum(a != b for a, b in zip(full, mine, strict=True)) / len(texts)}


def write(rows: list[dict[str, Any]], probed: list[dict[str, Any]]) -> None:
    lines = [
        "# Student search on the built-in demo",
        "",
        "## Vocabulary trimming on the 3-layer cut",
        "",
        "Command: `python benchmarks/search.py`. The demo's data (4000 / 1000 / 1000) and fine-tuned "
        "teacher, the 3-layer cut (teacher layers 1, 3, 5), kd, the same epochs for both (`--epochs`, "
        f"default {EPOCHS}; the epochs column says what ran); `trim` keeps the "
        "wordpieces of the 4000 training texts, every single-character piece and the special "
        "tokens. int8 = dynamic quantization. Sizes are bytes on disk of the model and its "
        "tokenizer files; latency is batch 1, sequence length 64, 2 threads, the teacher ONNX fp32 "
        "benched in the same run as each student. Measured on a shared 2-core machine (other jobs "
        "ran beside it), so read latencies loosely and sizes and accuracies exactly.",
        "",
        "| vocabulary | epochs | pieces | test pieces / text | test texts split otherwise | parameters "
        "| student acc | int8 acc | teacher acc | int8 retained "
        "| fp32 ONNX (MB) | int8 (MB) | teacher ONNX (MB) | size ratio int8 | int8 p50 b1 (ms) "
        "| teacher p50 b1 (ms) | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['epochs']} | {r['vocabulary']} | {r['pieces_per_text']:.1f} "
            f"| {r['changed']:.1%} "
            f"| {r['params'] / 1e6:.1f}M | {r['student_acc']:.4f} "
            f"| {r['int8_acc']:.4f} | {r['teacher_acc']:.4f} | {r['retained']:.3f} | {r['fp32_mb']:.1f} "
            f"| {r['int8_mb']:.1f} | {r['teacher_mb']:.1f} | {r['teacher_mb'] / r['int8_mb']:.2f}x "
            f"| {r['int8_p50']:.2f} | {r['teacher_p50']:.2f} | {r['speedup']:.2f}x |")
    lines += probe_table(probed)
    old = RESULTS.read_text() if RESULTS.is_file() else ""
    if SEARCH_HEADING in old:  # the search section (--search-run) is kept as it was
        lines += ["", SEARCH_HEADING + old.split(SEARCH_HEADING, 1)[1].rstrip()]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


def probe_table(probed: list[dict[str, Any]]) -> list[str]:
    teacher = next((r["precisions"]["fp32"] for r in probed if r["name"] == "teacher"), None)
    if teacher is None:
        return []
    lines = [
        "", "## The latency probe: candidate students, untrained, at their real shapes", "",
        "Command: `python benchmarks/search.py --only probe`. Each candidate is built as distill "
        "would build it (the trimmed ones keep the pieces of the 4000 training texts), exported "
        "untrained, quantized as the quantize stage would (dynamic int8, no accuracy gate) and "
        "timed at batch 1, sequence length 64, 2 threads, one process per model, in one run; the "
        "ratios are against the teacher ONNX fp32 of that run. Latency does not depend on the "
        "weights, so these are the latencies the trained candidates would have. Measured on a "
        "shared 2-core machine with other jobs running: the last column is the machine's 1-minute "
        "load average after each measurement, and a ratio between rows measured at different "
        "loads does not measure the models. Parameters and sizes are exact.", "",
        "| candidate | student | vocabulary | parameters | fp32 p50 (ms) | int8 p50 (ms) "
        "| int8 speed-up | int8 size (MB) | size ratio int8 | load average (fp32 / int8) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in probed:
        fp32, int8 = r["precisions"]["fp32"], r["precisions"]["int8"]
        lines.append(
            f"| {r['name']} | `{r['student']}` | {r['vocabulary']} | {r['parameters'] / 1e6:.1f}M "
            f"| {fp32['p50_ms']:.2f} | {int8['p50_ms']:.2f} | {teacher['p50_ms'] / int8['p50_ms']:.2f}x "
            f"| {int8['size_bytes'] / 1e6:.1f} | {teacher['size_bytes'] / int8['size_bytes']:.2f}x "
            f"| {_load(fp32)} / {_load(int8)} |")
    return lines


SEARCH_HEADING = "## The search in `kdedge compress` on the demo"


def write_search_section(run_dir: Path) -> None:
    """Replace the search section of search.md (everything from its heading on) with this
    run's."""
    import json

    from kdedge.artifacts import Manifest
    from kdedge.pipeline import stage_dirname

    distill = Manifest.load(run_dir / stage_dirname("distill"))
    found = distill.metrics["search"]
    report = json.loads((run_dir / stage_dirname("report") / "report.json").read_text())
    rows = {row["name"]: row for row in report["artifacts"]}
    shipped = rows[report["recommendation"]["artifact"]]
    cpu = Manifest.load(run_dir / stage_dirname("bench")).environment["cpu"]
    isa = ", ".join(flag for flag, present in cpu["isa"].items() if present) or "none"
    teacher = found["teacher"]
    lines = [
        SEARCH_HEADING, "",
        f"Command: `kdedge compress --out {run_dir.name}` (the default, `--student auto`), then "
        f"`python benchmarks/search.py --search-run {run_dir.name}`. Machine: {cpu['model']}, "
        f"{cpu['logical_cores']} logical cores, ISA: {isa}. Latencies: {found['latency_source']}, "
        "each candidate untrained at its real shapes, its faster precision; ratios against the "
        f"teacher's ONNX fp32 probed in the same run ({teacher['latency_ms']:.2f} ms). Retention: "
        "best validation accuracy over the teacher's "
        f"({teacher['validation_score']:.4f}). Budget: keep {found['budget']['min_retention']:.0%}"
        + (f", at most {found['budget']['latency_limit_ms']:.2f} ms"
           if found["budget"]["latency_limit_ms"] else ", no latency budget") + ". "
        f"Every candidate trained {found['schedule']['first_epochs']} epoch(s); the finalists "
        f"went on to the end of the schedule ({found['schedule']['epochs']} epochs) in the order "
        f"of their promise while the search stayed within {found['schedule']['cost']:g}x the "
        f"costliest candidate's own distillation ({found['schedule']['spent_s']:.0f} s of "
        f"{found['schedule']['allowed_s']:.0f} s, the probe's "
        f"{found['schedule'].get('probe_s', 0):.0f} s included). Distill stage (probe and search): "
        f"{distill.duration_s:.0f} s.", "",
        "| candidate | student | parameters | precision | p50 ms | speed-up | size (MB) | epochs "
        "| validation acc | retention | |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in found["candidates"]:
        trained = c.get("validation_score") is not None
        lines.append(
            f"| {c['name']} | `{c['student']}` | {c['parameters'] / 1e6:.1f}M | {c['precision']} "
            f"| {c['latency_ms']:.2f} | {c['speedup']:.2f}x | {c['size_bytes'] / 1e6:.1f} "
            f"| {c.get('epochs', 0)} | {c['validation_score']:.4f} | {c['retention']:.1%} | "
            if trained else
            f"| {c['name']} | `{c['student']}` | {c['parameters'] / 1e6:.1f}M | {c['precision']} "
            f"| {c['latency_ms']:.2f} | {c['speedup']:.2f}x | {c['size_bytes'] / 1e6:.1f} | 0 "
            "| pruned by latency | | ")
        lines[-1] += ("winner |" if c["winner"] else ("finalist |" if c.get("finalist") else " |"))
    lines += [
        "", f"The rule: {found['reason']}.",
        f"Shipped ({report['recommendation']['artifact']}): test accuracy "
        f"{shipped['test']['accuracy']:.4f}, {shipped['retained_accuracy']:.1%} of the teacher's; "
        f"{shipped['vs_reference']['speedup']['1']:.2f}x the teacher ONNX's batch-1 speed and "
        f"{shipped['vs_reference']['size_ratio']:.2f}x smaller, in the run's bench stage.",
    ]
    text = RESULTS.read_text() if RESULTS.is_file() else "# Student search on the built-in demo\n"
    head = text.split(SEARCH_HEADING)[0].rstrip()
    RESULTS.write_text(head + "\n\n" + "\n".join(lines) + "\n")


def _load(row: dict[str, Any]) -> str:
    return f"{row['load_average_1m']:.1f}" if "load_average_1m" in row else "n/a"


if __name__ == "__main__":
    main()
