"""Every distillation recipe and student on the built-in demo, with the same budget.

    python benchmarks/methods.py [--out runs/methods] [--only kd,annealing]

One data + teacher run is shared (the fine-tuned teacher comes from the user cache when it is
there); each variant then runs distill, export, quantize and a batch-1 bench of the teacher
ONNX and the int8 student in the same bench stage, so the speed-up is a ratio measured in one
run. Writes benchmarks/results/methods.md.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "methods.md"
EPOCHS = 3  # the training budget of every variant: passes over the 4000 training examples

SECOND_TEACHER = {"model": "demo", "training": {"epochs": 1, "learning_rate": 8e-5}}
VARIANTS: dict[str, dict[str, Any]] = {
    "kd": {"distill.recipe": "kd", "distill.training.epochs": EPOCHS},
    "kd-mse": {"distill.recipe": "kd", "distill.logit_loss": "mse", "distill.training.epochs": EPOCHS},
    "annealing": {"distill.recipe": "annealing", "distill.annealing.tau_max": 2,
                  "distill.annealing.phase1_epochs": 2, "distill.annealing.phase2_epochs": 1},
    "two-stage": {"distill.recipe": "two-stage", "distill.two_stage.stage1_epochs": 1,
                  "distill.two_stage.stage2_epochs": 2},
    # QE-style: 2000 unlabelled in-domain reviews (the rows the demo's train cap leaves out)
    # labelled by the teacher; 2 epochs over 6000 rows = the same example budget as 3 over 4000
    "kd-augment": {"distill.recipe": "kd", "distill.training.epochs": 2,
                   "distill.augment.unlabeled": "unused", "distill.augment.max_unlabeled": 2000},
    # two teachers: the run's, and the same encoder fine-tuned with another learning rate
    "multi-teacher": {"distill.recipe": "multi-teacher", "distill.training.epochs": EPOCHS,
                      "distill.multi_teacher.teachers": [SECOND_TEACHER]},
    "multi-teacher-rl": {"distill.recipe": "multi-teacher", "distill.training.epochs": EPOCHS,
                         "distill.multi_teacher.teachers": [SECOND_TEACHER],
                         "distill.multi_teacher.weighting": "rl-select"},
    # MKD: BBC News topics (1780 training articles, its own fine-tuned teacher) join the
    # reviews for 2 epochs, then 1 epoch on the reviews alone
    "multi-task": {"distill.recipe": "multi-task", "distill.training.epochs": EPOCHS - 1,
                   "distill.multi_task.finetune_epochs": 1,
                   "distill.multi_task.tasks": [{"name": "news", "data": {"source": "demo-news"}}]},
    # the QE / MKD students: a BiLSTM over the teacher's tokenizer, embeddings from the teacher
    "bilstm-kd": {"distill.recipe": "kd", "distill.student": "bilstm:hidden_size=256,init_embeddings=true",
                  "distill.training.epochs": EPOCHS, "distill.training.learning_rate": 2e-3},
}
# every variant trains the 3-layer cut of the teacher unless it names its student (the default,
# auto, would search over students instead)
BENCH = {"distill.student": "3", "bench.models": ["teacher-onnx", "student-int8"],
         "bench.batch_sizes": [1], "bench.min_duration_s": 3.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/methods"))
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from --out")
    args = parser.parse_args()
    if args.table_only:
        write([summarize(n, args.out / n) for n in VARIANTS if _finished(args.out / n)])
        print(RESULTS.read_text())
        return
    from kdedge_cli.main import _setup_logging

    _setup_logging(logging.INFO)
    from kdedge import pipeline
    from kdedge.config import build_config

    base_dir = args.out / "base"
    base = build_config(overrides={**BENCH, "run.out": str(base_dir)})
    pipeline.prepare_run(base, base_dir, resume=True, force=False)
    pipeline.run(base, base_dir, resume=True, only=("data", "teacher"))
    for name in args.only.split(","):
        run_dir = args.out / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(base_dir, run_dir)
        cfg = build_config(overrides={**BENCH, **VARIANTS[name], "run.out": str(run_dir)})
        pipeline.prepare_run(cfg, run_dir, resume=True, force=False)
        pipeline.run(cfg, run_dir, only=("distill", "export", "quantize", "bench"))
        write([summarize(n, args.out / n) for n in VARIANTS if _finished(args.out / n)])
    print(RESULTS.read_text())


def _finished(run_dir: Path) -> bool:
    from kdedge.pipeline import stage_dirname

    return (run_dir / stage_dirname("bench") / "manifest.json").is_file()


def summarize(name: str, run_dir: Path) -> dict[str, Any]:
    from kdedge.artifacts import Manifest
    from kdedge.bench.stats import latency_at
    from kdedge.pipeline import stage_dirname

    def metrics(stage: str) -> dict[str, Any]:
        return Manifest.load(run_dir / stage_dirname(stage)).metrics

    distill, bench = metrics("distill"), metrics("bench")
    int8 = metrics("quantize")["models"]["student-int8"]
    teacher_acc = metrics("export")["models"]["teacher"]["test"]["accuracy"]
    teacher_p50 = latency_at(bench["models"]["teacher-onnx"])["1"]["p50_ms"]
    int8_p50 = latency_at(bench["models"]["student-int8"])["1"]["p50_ms"]
    return {
        "variant": name, "student": distill["student"]["source"],
        "params": distill["student"]["parameters"],
        "student_acc": distill["test"]["accuracy"], "int8_acc": int8["test"]["accuracy"],
        "teacher_acc": teacher_acc, "retained": int8["test"]["accuracy"] / teacher_acc,
        "int8_mb": bench["models"]["student-int8"]["size_bytes"] / 1e6,
        "int8_p50": int8_p50, "teacher_p50": teacher_p50, "speedup": teacher_p50 / int8_p50,
        "train_s": sum(row["seconds"] for row in distill["history"]),
        "epochs": len(distill["history"]),
        "length": bench["sequence_lengths"][0],
        "notes": notes(distill),
    }


def notes(distill: dict[str, Any]) -> str:
    """What else a variant learned: other teachers, the selector's choices, other tasks."""
    out = [f"teacher {i} test acc {t['test']['accuracy']:.4f}"
           for i, t in enumerate(distill.get("extra_teachers") or [], start=2)]
    last = distill["history"][-1]
    if "teacher0_selected" in last:
        rates = [last[f"teacher{k}_selected"] for k in range(len(out) + 1)]
        out.append("last epoch selected " + " / ".join(f"{r:.2f}" for r in rates))
    for name, task in (distill.get("tasks") or {}).items():
        out.append(f"{name}: student test acc {task['test']['accuracy']:.4f} (teacher "
                   f"{task['teacher_test']['accuracy']:.4f})")
    return "; ".join(out)


def write(rows: list[dict[str, Any]]) -> None:
    lengths = " / ".join(sorted({str(r["length"]) for r in rows})) or "-"
    lines = [
        "# Distillation recipes and students on the built-in demo",
        "",
        f"Command: `python benchmarks/methods.py`. Same data (4000 / 1000 / 1000), same fine-tuned "
        f"teacher, {EPOCHS} epochs of training per variant, int8 = dynamic quantization. Latency: "
        f"batch 1, sequence length {lengths} (the bench default: 95% of the validation and test texts "
        "fit), 2 threads, teacher ONNX fp32 and int8 student measured in the same bench run. "
        "Training seconds are wall clock on 2 cores, one variant at a time; they exclude "
        "fine-tuning the extra teachers. multi-teacher: the run's teacher plus the same encoder "
        "fine-tuned with learning rate 8e-5; multi-task: BBC News topics (`demo-news`) as the second task.",
        "",
        "| variant | student | parameters | student acc | int8 acc | teacher acc | int8 retained "
        "| int8 size (MB) | int8 p50 b1 (ms) | teacher p50 b1 (ms) | speed-up | training (s) | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['student']} | {r['params'] / 1e6:.1f}M | {r['student_acc']:.4f} "
            f"| {r['int8_acc']:.4f} | {r['teacher_acc']:.4f} | {r['retained']:.3f} "
            f"| {r['int8_mb']:.1f} | {r['int8_p50']:.2f} | {r['teacher_p50']:.2f} "
            f"| {r['speedup']:.2f}x | {r['train_s']:.0f} | {r.get('notes', '')} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
