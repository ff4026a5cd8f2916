"""Time `kdedge compress` on the built-in demo with default settings and check its targets.

    python benchmarks/demo.py [--out runs/bench-demo] [--from-run RUN_DIR]

Runs the real command in a fresh run directory (the demo wheels and the fine-tuned teacher may
come from the user cache: pass --cold to use an empty cache), or reads a finished default run
(--from-run), and writes benchmarks/results/demo.md with the time of each stage and the
targets: the student the run ships (the report's recommendation, what the bundle holds) keeps
>= 97% of the teacher's test accuracy, its batch-1 p50 latency is >= 8x lower than the
teacher's ONNX fp32 (>= 10x on a CPU with VNNI), it is >= 10x smaller on disk, and the stages
take <= 15 min together, the student search included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "demo.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-demo"))
    parser.add_argument("--cold", action="store_true", help="use an empty KDEDGE_CACHE")
    parser.add_argument("--from-run", type=Path, help="write the table from this finished run")
    args = parser.parse_args()
    if args.from_run:
        write_table(args.from_run, None, cold=False)
        print(RESULTS.read_text())
        return
    env = dict(os.environ)
    if args.cold:
        env["KDEDGE_CACHE"] = tempfile.mkdtemp(prefix="kdedge-cold-")
    if args.out.exists():
        shutil.rmtree(args.out)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kdedge_cli", "compress", "--out", str(args.out)],
                   env=env, check=True)
    wall = time.perf_counter() - started
    write_table(args.out, wall, cold=args.cold)
    print(RESULTS.read_text())


def write_table(run_dir: Path, wall_s: float | None, cold: bool) -> None:
    from kdedge.artifacts import Manifest
    from kdedge.pipeline import STAGE_NAMES, stage_dirname

    manifests = {name: Manifest.load(run_dir / stage_dirname(name)) for name in STAGE_NAMES}
    report = json.loads((run_dir / stage_dirname("report") / "report.json").read_text())
    rows = {row["name"]: row for row in report["artifacts"]}
    shipped = report["recommendation"]["artifact"]
    teacher, ship = rows["teacher-onnx"], rows[shipped]
    retained = ship["retained_accuracy"]
    speedup = ship["vs_reference"]["speedup"]["1"]
    size_ratio = ship["vs_reference"]["size_ratio"]
    env = manifests["bench"].environment["cpu"]
    isa = ", ".join(flag for flag, present in env["isa"].items() if present) or "none"
    vnni = any(present and "vnni" in flag for flag, present in env["isa"].items())
    goal = 10 if vnni else 8
    stages = sum(m.duration_s for m in manifests.values())
    student = manifests["distill"].metrics["student"]
    found = manifests["distill"].metrics.get("search") or {}
    lines = [
        "# `kdedge compress` on the built-in demo",
        "",
        f"Command: `python benchmarks/demo.py` ({'empty' if cold else 'warm'} cache: the demo "
        "wheels" + ("" if cold else " and, if present, the fine-tuned teacher") + " come from "
        "the user cache). Default settings.",
        f"Machine: {env['model']}, {env['logical_cores']} logical cores, ISA: {isa}; "
        f"bench threads: {', '.join(map(str, manifests['bench'].metrics['threads']))}.",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
        f"| shipped student ({shipped}) test accuracy / teacher (ONNX fp32) | {retained:.3f} "
        f"({ship['test']['accuracy']:.4f} / {teacher['test']['accuracy']:.4f}) | >= 0.97 | "
        f"{_yes(retained >= 0.97)} |",
        f"| batch-1 p50: teacher ONNX / shipped student | {speedup:.2f}x "
        f"({teacher['latency']['1']['p50_ms']:.2f} ms / {ship['latency']['1']['p50_ms']:.2f} ms) "
        f"| >= {goal}x ({'VNNI' if vnni else 'no VNNI'}) | {_yes(speedup >= goal)} |",
        f"| size on disk: teacher ONNX / shipped student | {size_ratio:.2f}x "
        f"({teacher['size_bytes'] / 1e6:.1f} MB / {ship['size_bytes'] / 1e6:.1f} MB) | >= 10x | "
        f"{_yes(size_ratio >= 10)} |",
        f"| stage time, all stages | {stages:.0f} s | <= 900 s | {_yes(stages <= 900)} |",
        *([f"| whole run, wall clock | {wall_s:.0f} s | | |"] if wall_s is not None else []),
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {m.duration_s:.1f} |" for name, m in manifests.items()],
        "",
        f"Teacher fine-tuned: {manifests['teacher'].metrics['fine_tuned']}, from cache: "
        f"{manifests['teacher'].metrics['cache_hit']}. Student: {student.get('source')} "
        f"({student.get('parameters'):,} parameters"
        + (f"; the search's winner: {found.get('reason')}" if found else "") + "). "
        f"Recommended: {shipped}.",
        "",
        "| artifact | test accuracy | p50 batch 1 (ms) | p50 batch 32 (ms) | size (MB) |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        latency = row.get("latency") or {}
        cells = [f"{latency[b]['p50_ms']:.2f}" if b in latency else "n/a" for b in ("1", "32")]
        size = f"{row['size_bytes'] / 1e6:.1f}" if row.get("size_bytes") else "n/a"
        lines.append(f"| {name} | {row['test']['accuracy']:.4f} | {cells[0]} | {cells[1]} | {size} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


if __name__ == "__main__":
    main()
