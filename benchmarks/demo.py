"""Time `kdedge compress` on the built-in demo with default settings and check its targets.

    python benchmarks/demo.py [--out runs/bench-demo]

Runs the real command in a fresh run directory (the demo wheels and the fine-tuned teacher may
come from the user cache: pass --cold to use an empty cache) and writes
benchmarks/results/demo.md with the wall time of each stage and the issue's targets:
the int8 student keeps >= 95% of the teacher's test accuracy, its batch-1 p50 latency is >= 3x
lower than the teacher's ONNX fp32, it is >= 4x smaller on disk, and the run takes <= 10 min.
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
    args = parser.parse_args()
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


def write_table(run_dir: Path, wall_s: float, cold: bool) -> None:
    from kdedge.artifacts import Manifest
    from kdedge.pipeline import STAGE_NAMES, stage_dirname

    manifests = {name: Manifest.load(run_dir / stage_dirname(name)) for name in STAGE_NAMES}
    report = json.loads((run_dir / stage_dirname("report") / "report.json").read_text())
    rows = {row["name"]: row for row in report["artifacts"]}
    teacher, int8 = rows["teacher-onnx"], rows["student-int8"]
    retained = int8["retained_accuracy"]
    speedup = int8["vs_reference"]["speedup"]["1"]
    size_ratio = int8["vs_reference"]["size_ratio"]
    env = manifests["bench"].environment["cpu"]
    isa = ", ".join(flag for flag, present in env["isa"].items() if present) or "none"
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
        f"| int8 student test accuracy / teacher (ONNX fp32) | {retained:.3f} "
        f"({int8['test']['accuracy']:.4f} / {teacher['test']['accuracy']:.4f}) | >= 0.95 | "
        f"{_yes(retained >= 0.95)} |",
        f"| batch-1 p50: teacher ONNX / int8 student | {speedup:.2f}x "
        f"({teacher['latency']['1']['p50_ms']:.2f} ms / {int8['latency']['1']['p50_ms']:.2f} ms) "
        f"| >= 3x | {_yes(speedup >= 3)} |",
        f"| size on disk: teacher ONNX / int8 student | {size_ratio:.2f}x "
        f"({teacher['size_bytes'] / 1e6:.1f} MB / {int8['size_bytes'] / 1e6:.1f} MB) | >= 4x | "
        f"{_yes(size_ratio >= 4)} |",
        f"| whole run, wall clock | {wall_s:.0f} s | <= 600 s | {_yes(wall_s <= 600)} |",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {m.duration_s:.1f} |" for name, m in manifests.items()],
        "",
        f"Teacher fine-tuned: {manifests['teacher'].metrics['fine_tuned']}, from cache: "
        f"{manifests['teacher'].metrics['cache_hit']}. Recommended: "
        f"{report['recommendation']['artifact']}.",
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
