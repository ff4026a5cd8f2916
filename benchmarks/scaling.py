"""Distillation throughput on one and two training processes (and bf16) on this machine.

    python benchmarks/scaling.py [--out runs/scaling] [--examples 1000] [--epochs 2]

One data + teacher run on the demo (the teacher fine-tuned for one epoch: its quality does not
matter here), then the same distill stage (`kdedge distill RUN`, the demo's KD recipe and
3-layer student, batch 32) once per variant, each a real command line, two processes through
`--launcher accelerate --num-processes 2`. Throughput is training examples per second over
all epochs, evaluation excluded, from the distill manifest's history. Writes
benchmarks/results/scaling.md. Run it alone: any other job on the machine changes the numbers.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.md"
TWO = ["--launcher", "accelerate", "--num-processes", "2"]
# name: (launcher options, run.threads, distill.training settings)
VARIANTS: dict[str, tuple[list[str], int | None, dict[str, Any]]] = {
    "1 process": ([], None, {}),
    "1 process, 1 thread": ([], 1, {}),
    "2 processes": (TWO, None, {}),
    "2 processes, gradient accumulation 2": (TWO, None, {"gradient_accumulation_steps": 2}),
    "1 process, bf16 autocast": ([], None, {"mixed_precision": "bf16"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/scaling"))
    parser.add_argument("--examples", type=int, default=1000, help="training examples")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    base = prepare_base(args.out / "base", args.examples, args.epochs)
    rows = []
    for name, (launcher, threads, training) in VARIANTS.items():
        run = args.out / name.replace(" ", "-").replace(",", "")
        if run.exists():
            shutil.rmtree(run)
        shutil.copytree(base, run)
        configure(run, threads, training)
        done = subprocess.run([sys.executable, "-m", "kdedge_cli", "distill", str(run), *launcher],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        rows.append(summarize(name, run, threads))
        write(rows, args.examples, args.epochs)
    print(RESULTS.read_text())


def prepare_base(run: Path, examples: int, epochs: int) -> Path:
    from kdedge import pipeline
    from kdedge.config import build_config
    from kdedge_cli.main import _setup_logging

    _setup_logging(logging.INFO)
    cfg = build_config(overrides={"data.max_train_samples": examples, "data.max_eval_samples": 200,
                                  "teacher.training.epochs": 1, "distill.recipe": "kd",
                                  "distill.training.epochs": epochs, "run.out": str(run)})
    pipeline.prepare_run(cfg, run, resume=True, force=False)
    pipeline.run(cfg, run, resume=True, only=("data", "teacher"))
    return run


def configure(run: Path, threads: int | None, training: dict[str, Any]) -> None:
    from kdedge.pipeline import RESOLVED_CONFIG

    path = run / RESOLVED_CONFIG
    config = yaml.safe_load(path.read_text())
    config["run"]["threads"] = threads
    config["distill"]["training"].update(training)
    path.write_text(yaml.safe_dump(config))


def summarize(name: str, run: Path, threads: int | None) -> dict[str, Any]:
    from kdedge.artifacts import Manifest
    from kdedge.pipeline import stage_dirname

    metrics = Manifest.load(run / stage_dirname("distill")).metrics
    history = metrics["history"]
    rows = metrics["training_examples"]  # every epoch trains on each of them once
    seconds = sum(rows / row["examples_per_s"] for row in history)
    examples = rows * len(history)
    world = metrics["processes"]["world_size"]
    cores = os.cpu_count() or 1
    return {"name": name, "processes": world,
            "threads": threads or max(1, cores // world), "examples_per_s": examples / seconds,
            "accuracy": metrics["validation"]["accuracy"], "loss": history[-1]["train_loss"]}


def write(rows: list[dict[str, Any]], examples: int, epochs: int) -> None:
    base = rows[0]["examples_per_s"]
    lines = [
        "# Distillation throughput: one and two training processes",
        "",
        f"Command: `python benchmarks/scaling.py --examples {examples} --epochs {epochs}`. The "
        f"demo's KD recipe, 3-layer student, batch 32 (the global batch of each step, however "
        f"many processes share it), {examples} training examples, {epochs} epochs; "
        f"examples per second of training (evaluation excluded). Machine: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU; "
        "two processes are `accelerate launch` (torchrun) with gloo between them.",
        "",
        "| variant | processes | threads per process | examples/s | per process | vs 1 process "
        "| validation accuracy | last epoch loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['processes']} | {r['threads']} | {r['examples_per_s']:.1f} "
            f"| {r['examples_per_s'] / r['processes']:.1f} | {r['examples_per_s'] / base:.2f}x "
            f"| {r['accuracy']:.4f} | {r['loss']:.4f} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
