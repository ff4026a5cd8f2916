"""What vocabulary trimming does to the demo's 3-layer cut: size and accuracy, full vs trimmed.

    python benchmarks/search.py [--out runs/search] [--table-only]

One data + teacher run is shared (the fine-tuned teacher comes from the user cache when it is
there); the 3-layer kd student then runs distill, export, quantize and a batch-1 bench twice,
with distill.vocabulary full and trim, the teacher ONNX benched in each run so every ratio is
measured in one run. Writes benchmarks/results/search.md.
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
COMMON = {"distill.student": "3", "distill.recipe": "kd", "distill.training.epochs": EPOCHS,
          "bench.models": ["teacher-onnx", "student-onnx", "student-int8"], "bench.batch_sizes": [1],
          "bench.min_duration_s": 3.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/search"))
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from --out")
    args = parser.parse_args()
    if not args.table_only:
        run_all(args.out)
    write([trim_row(name, args.out / name) for name in VARIANTS if (args.out / name).is_dir()])
    print(RESULTS.read_text())


def run_all(out: Path) -> None:
    from kdedge_cli.main import _setup_logging

    _setup_logging(logging.INFO)
    from kdedge import pipeline
    from kdedge.config import build_config

    base_dir = out / "base"
    base = build_config(overrides={**COMMON, "run.out": str(base_dir)})
    pipeline.prepare_run(base, base_dir, resume=True, force=False)
    pipeline.run(base, base_dir, resume=True, only=("data", "teacher"))
    for name, overrides in VARIANTS.items():
        run_dir = out / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(base_dir, run_dir)
        cfg = build_config(overrides={**COMMON, **overrides, "run.out": str(run_dir)})
        pipeline.prepare_run(cfg, run_dir, resume=True, force=False)
        pipeline.run(cfg, run_dir, only=("distill", "export", "quantize", "bench"))


def trim_row(name: str, run_dir: Path) -> dict[str, Any]:
    """methods.py's summary of the run, plus the vocabulary and the fp32 ONNX size."""
    from kdedge.artifacts import Manifest
    from kdedge.pipeline import stage_dirname

    distill = Manifest.load(run_dir / stage_dirname("distill")).metrics
    bench = Manifest.load(run_dir / stage_dirname("bench")).metrics["models"]
    return {**summarize(name, run_dir), "vocabulary": distill["student"]["vocabulary"]["size"],
            "fp32_mb": bench["student-onnx"]["size_bytes"] / 1e6,
            "teacher_mb": bench["teacher-onnx"]["size_bytes"] / 1e6}


def write(rows: list[dict[str, Any]]) -> None:
    lines = [
        "# Student search on the built-in demo",
        "",
        "## Vocabulary trimming on the 3-layer cut",
        "",
        f"Command: `python benchmarks/search.py`. The demo's data (4000 / 1000 / 1000) and fine-tuned "
        f"teacher, the 3-layer cut (teacher layers 1, 3, 5), kd, {EPOCHS} epochs; `trim` keeps the "
        "wordpieces of the 4000 training texts, every single-character piece and the special "
        "tokens. int8 = dynamic quantization. Sizes are bytes on disk of the model and its "
        "tokenizer files; latency is batch 1, sequence length 64, 2 threads, the teacher ONNX fp32 "
        "benched in the same run as each student. Measured on a shared 2-core machine (other jobs "
        "ran beside it), so read latencies loosely and sizes and accuracies exactly.",
        "",
        "| vocabulary | pieces | parameters | student acc | int8 acc | teacher acc | int8 retained "
        "| fp32 ONNX (MB) | int8 (MB) | teacher ONNX (MB) | size ratio int8 | int8 p50 b1 (ms) "
        "| teacher p50 b1 (ms) | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['vocabulary']} | {r['params'] / 1e6:.1f}M | {r['student_acc']:.4f} "
            f"| {r['int8_acc']:.4f} | {r['teacher_acc']:.4f} | {r['retained']:.3f} | {r['fp32_mb']:.1f} "
            f"| {r['int8_mb']:.1f} | {r['teacher_mb']:.1f} | {r['teacher_mb'] / r['int8_mb']:.2f}x "
            f"| {r['int8_p50']:.2f} | {r['teacher_p50']:.2f} | {r['speedup']:.2f}x |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
