"""Real data, first run: a 5,000-row, 2-class CSV of short texts, as a new user would bring.

    python benchmarks/real_data.py csv [--out runs/real-data.csv]   # build the CSV
    python benchmarks/real_data.py steps [--rows 640] [--rounds 2]   # distillation steps, A/B
    python benchmarks/real_data.py profile [--rows 128]              # where a step's time goes
    python benchmarks/real_data.py run [--out runs/real-data]        # kdedge compress, end to end

The CSV: Rotten Tomatoes snippets from the demo data (short texts, about 27 tokens), 13% of one
class as in an SMS-spam set, 4,700 distinct texts and 300 repeated ones. `steps` times one epoch
of the demo's 3-layer student on the same rows with the loop as it was (a per-tensor AdamW, a
shuffled epoch) and as it is (a fused AdamW, length-bucketed batches), alternating the two so
that a shared machine's load falls on both alike. `run` is `kdedge compress --data CSV` with
default settings; its stage times come from the run's manifests. Each writes its part of
benchmarks/results/real-data.md (printed; paste it in).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROWS, REPEATED, MINORITY = 5000, 300, 0.13


def build_csv(out: Path) -> Path:
    import pandas as pd

    from kdedge import demo

    table = pd.read_csv(demo.dataset_file(), compression="bz2")
    table = table[table["category"].isin(["fresh", "rotten"])].drop_duplicates("text")
    distinct = ROWS - REPEATED
    rotten = round(MINORITY * distinct)
    rows = pd.concat([table[table["category"] == "fresh"].sample(distinct - rotten, random_state=0),
                      table[table["category"] == "rotten"].sample(rotten, random_state=0)])
    rows = pd.concat([rows, rows.sample(REPEATED, random_state=1)]).sample(frac=1.0, random_state=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows.rename(columns={"category": "label"})[["text", "label"]].to_csv(out, index=False)
    return out


def _setup(csv: Path, rows: int) -> tuple[Any, Any, Any, Any]:
    """(split, tokenizer, demo teacher with a 2-label head, fake cached teacher outputs)."""
    import numpy as np
    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdedge import demo
    from kdedge.data.dataset import TaskSplit

    torch.set_num_threads(2)
    table = pd.read_csv(csv).head(rows)
    split = TaskSplit(table["text"].tolist(), (table["label"] == "fresh").to_numpy(np.int64))
    tokenizer = AutoTokenizer.from_pretrained(demo.teacher_dir())
    teacher = AutoModelForSequenceClassification.from_pretrained(demo.teacher_dir(), num_labels=2)
    generator = torch.Generator().manual_seed(0)
    cached = {"logits": torch.randn(rows, 2, generator=generator),
              "sentence_cls": torch.zeros(rows, 384), "sentence_mean": torch.zeros(rows, 384)}
    return split, tokenizer, teacher, cached


def _epoch(split: Any, tokenizer: Any, teacher: Any, cached: Any, buckets: bool,
           description: str) -> None:
    """One epoch of the 3-layer student with the kd recipe, as the distill stage trains it."""
    from kdedge.config import DistillConfig, TrainingConfig
    from kdedge.distill import losses
    from kdedge.distill.classifier import cached_outputs
    from kdedge.distill.recipes import Dims, vanilla_kd
    from kdedge.models.students import build_student
    from kdedge.training import trainer

    student, _ = build_student("3", teacher)
    phase = vanilla_kd(DistillConfig(), Dims(384, 384, 1, False))[0]
    cfg = TrainingConfig(epochs=1, learning_rate=1e-4, length_buckets=buckets)
    trainer.train(student, tokenizer, split, losses.build(phase.losses),
                  teacher=lambda batch: cached_outputs(cached, batch["index"]),
                  evaluate=lambda model: 0.0, cfg=cfg, max_length=128, seed=0,
                  description=description)


def profile(csv: Path, rows: int) -> None:
    """torch.profiler's top operators over one short epoch, as the loop is now."""
    import torch

    split, tokenizer, teacher, cached = _setup(csv, rows)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _epoch(split, tokenizer, teacher, cached, True, "student (profiled)")
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15))


def time_steps(csv: Path, rows: int, rounds: int) -> None:
    """CPU and wall seconds of one epoch over `rows` rows, before and after, alternating."""
    import torch

    from kdedge.training import trainer

    split, tokenizer, teacher, cached = _setup(csv, rows)
    fused_adamw = torch.optim.AdamW

    def per_tensor_adamw(groups: Any, lr: float, fused: bool) -> Any:  # the loop as it was
        return fused_adamw(groups, lr=lr)

    lengths = trainer.token_lengths(tokenizer, split, 128)
    results: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for _ in range(rounds):
        for variant in ("before", "after"):
            torch.optim.AdamW = per_tensor_adamw if variant == "before" else fused_adamw
            wall, cpu = time.perf_counter(), time.process_time()
            _epoch(split, tokenizer, teacher, cached, variant == "after", f"student ({variant})")
            results[variant].append((time.perf_counter() - wall, time.process_time() - cpu))
    torch.optim.AdamW = fused_adamw
    steps = -(-rows // 32)
    shuffled = sum(max(lengths[r] for r in b) * len(b)
                   for b in trainer.shuffled_batches(rows, 32)(torch.Generator().manual_seed(0)))
    bucketed = sum(max(lengths[r] for r in b) * len(b)
                   for b in trainer.length_bucketed_batches(lengths, 32)(
                       torch.Generator().manual_seed(0)))
    print("| loop | epoch wall s (each round) | epoch CPU s (each round) | ms per step (CPU, best) "
          "| tokens per epoch incl. padding |\n|---|---|---|---|---|")
    for variant, tokens in (("before", shuffled), ("after", bucketed)):
        walls = ", ".join(f"{w:.1f}" for w, _ in results[variant])
        cpus = ", ".join(f"{c:.1f}" for _, c in results[variant])
        best = min(c for _, c in results[variant]) / steps * 1000
        print(f"| {variant} | {walls} | {cpus} | {best:.0f} | {tokens} |")
    print(f"\n{rows} rows, {steps} steps of batch 32; {sum(lengths)} real tokens.")


def run(csv: Path, out: Path) -> None:
    """`kdedge compress` with defaults; the stage times from the run's manifests."""
    from kdedge.artifacts import Manifest
    from kdedge.pipeline import STAGE_NAMES, stage_dirname

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kdedge_cli", "compress", "--data", str(csv), "--out",
                    str(out), "--force"], check=True)
    wall = time.perf_counter() - started
    durations = {name: Manifest.load(out / stage_dirname(name)).duration_s for name in STAGE_NAMES}
    print("| stage | seconds |\n|---|---|")
    for name, seconds in durations.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"| all stages | {sum(durations.values()):.1f} |\n\nwall clock {wall:.0f} s")
    teacher = Manifest.load(out / stage_dirname("teacher")).metrics
    print(f"teacher epochs run: {len(teacher.get('history') or [])}, best {teacher.get('best_epoch')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("csv", "steps", "profile", "run"))
    parser.add_argument("--csv", type=Path, default=Path("runs/real-data.csv"))
    parser.add_argument("--out", type=Path, default=Path("runs/real-data"))
    parser.add_argument("--rows", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.what == "csv" or not args.csv.is_file():
        print(build_csv(args.csv))
    if args.what == "steps":
        time_steps(args.csv, args.rows, args.rounds)
    elif args.what == "profile":
        profile(args.csv, args.rows)
    elif args.what == "run":
        run(args.csv, args.out)


if __name__ == "__main__":
    main()
