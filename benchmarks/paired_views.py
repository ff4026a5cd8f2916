"""Paired views on the noisy review demo: a student that reads noisy text, taught by a teacher
that reads the clean text of the same rows, against one taught by a teacher on the noisy text.

    python benchmarks/paired_views.py [--out runs/paired-views] [--only noisy-teacher,paired-kd]

`--data demo-noisy` is the review demo with its texts corrupted (kdedge/data/noise.py) and the
originals kept in `clean`. Every variant trains the same student (the teacher's layers 1, 3, 5)
for the same epochs on the same noisy training texts and is scored on the same noisy test
texts; what differs is what its teacher read and the recipe:

- noisy-teacher: the teacher is fine-tuned on the noisy texts (no paired views), kd;
- paired-kd: the teacher is fine-tuned on the clean texts (`data.teacher_text_column: clean`),
  its outputs on the clean view are the targets for the student on the noisy view, kd;
- paired-two-stage: the same teacher, the two-stage recipe (sentence vectors, then logits), the
  paper's cross-modal setting.

Runs data, teacher and distill (the comparison is of accuracy; speed is the search's and the
other benchmarks' business). Writes benchmarks/results/paired-views.md.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "paired-views.md"
STAGES = ("data", "teacher", "distill")
COMMON = {"data.source": "demo-noisy", "distill.student": "3"}
VARIANTS: dict[str, dict[str, Any]] = {
    "noisy-teacher": {"data.teacher_text_column": None, "distill.recipe": "kd"},
    "paired-kd": {"distill.recipe": "kd"},
    "paired-two-stage": {"distill.recipe": "two-stage"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/paired-views"))
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from --out")
    args = parser.parse_args()
    if not args.table_only:
        from kdedge_cli.main import _setup_logging

        _setup_logging(logging.INFO)
        from kdedge import pipeline
        from kdedge.config import build_config

        for name in args.only.split(","):
            run_dir = args.out / name
            if run_dir.exists():
                shutil.rmtree(run_dir)
            cfg = build_config(overrides={**COMMON, **VARIANTS[name], "run.out": str(run_dir)})
            pipeline.prepare_run(cfg, run_dir, resume=False, force=True)
            pipeline.run(cfg, run_dir, only=STAGES)
    write([summarize(name, args.out / name) for name in VARIANTS if _finished(args.out / name)])
    print(RESULTS.read_text())


def _finished(run_dir: Path) -> bool:
    from kdedge.pipeline import stage_dirname

    return (run_dir / stage_dirname("distill") / "manifest.json").is_file()


def summarize(name: str, run_dir: Path) -> dict[str, Any]:
    from kdedge.artifacts import Manifest
    from kdedge.pipeline import stage_dirname

    def metrics(stage: str) -> dict[str, Any]:
        return Manifest.load(run_dir / stage_dirname(stage)).metrics

    data, teacher, distill = metrics("data"), metrics("teacher"), metrics("distill")
    return {"variant": name, "recipe": distill["recipe"],
            "teacher_reads": (data.get("views") or {}).get("teacher", "text"),
            "teacher_acc": teacher["test"]["accuracy"], "teacher_epochs": len(teacher["history"]),
            "student_val": distill["validation"]["accuracy"],
            "student_acc": distill["test"]["accuracy"],
            "student_f1": distill["test"]["macro_f1"]}


def write(rows: list[dict[str, Any]]) -> None:
    from kdedge.environment import cpu_info

    cpu = cpu_info()
    isa = ", ".join(flag for flag, on in cpu["isa"].items() if on)
    lines = [
        "# Paired views on the noisy review demo",
        "",
        "Command: `python benchmarks/paired_views.py`. `--data demo-noisy`: the review demo (4000 / "
        "1000 / 1000) with every text corrupted (lower case, no punctuation, 8% of the letters "
        "edited, half of the confusable words swapped; `kdedge/data/noise.py`), the original in "
        "the `clean` column. The same student (the teacher's layers 1, 3, 5) trains 3 epochs on "
        "the noisy training texts and is scored on the noisy test texts in every variant; the "
        "teacher's test accuracy is on the view it reads. "
        f"Machine: {cpu['model']}, {cpu['logical_cores']} logical cores, ISA: {isa}.",
        "",
        "| variant | teacher reads | recipe | teacher test acc (its view) | teacher epochs "
        "| student val acc | student test acc (noisy) | student test macro-F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['teacher_reads']} | {r['recipe']} | {r['teacher_acc']:.4f} "
            f"| {r['teacher_epochs']} | {r['student_val']:.4f} | {r['student_acc']:.4f} "
            f"| {r['student_f1']:.4f} |")
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
