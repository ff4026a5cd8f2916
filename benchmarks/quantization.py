"""Every quantization mode at every graph-optimization level on one exported student.

    python benchmarks/quantization.py --run runs/bench-demo [--examples 300] [--threads 2]

Reads a finished run (its 01_data splits and 04_export/student, never modified), builds each
variant in a temporary folder and writes benchmarks/results/quantization.md: validation and
test accuracy (the task's primary metric) on the first --examples texts of each split, size on
disk of the graph, and p50 latency at batch 1 and batch 32 on real test texts padded to
data.max_length, all relative to the unoptimized fp32 student. Latency is timed in this process
(warm-up runs discarded, then at least --min-runs runs and --min-seconds), one variant at a
time with the same thread count: lighter than the bench stage's protocol (a spawned process per
model), and the same for every row.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "quantization.md"
LEVELS = ("none", "O1", "O2", "O3")


def variants(preset: str) -> list[tuple[str, Any]]:
    from kdedge.quantize.modes import PRESET_TYPES, QuantSpec

    activation, weight = PRESET_TYPES[preset]
    base = QuantSpec(preset=preset, activation_type=activation, weight_type=weight)
    return [
        ("fp32", None),
        ("dynamic int8 (default)", base),
        ("dynamic int8, per-channel", base.replace(per_channel=True)),
        ("dynamic int8, reduce-range", base.replace(reduce_range=True)),
        ("static int8 QDQ, MinMax", base.replace(mode="static", calibration_method="minmax")),
        ("static int8 QDQ, Entropy", base.replace(mode="static", calibration_method="entropy")),
        ("static int8 QDQ, Percentile",
         base.replace(mode="static", calibration_method="percentile")),
        ("fp16", QuantSpec(mode="fp16")),
    ]


def paired_latency_ms(path: Path, ref: Any, feed: dict[str, np.ndarray], threads: int,
                      min_runs: int, min_seconds: float, warmup: int = 5) -> tuple[float, float]:
    """p50 of the variant and of the fp32 reference, their runs interleaved (reference, then
    variant, in every round) so a change in background load moves both alike."""
    from kdedge.runtime import ort_session

    session = ort_session(path, threads)

    def fed(s: Any) -> dict[str, np.ndarray]:
        names = {i.name for i in s.get_inputs()}
        return {k: v for k, v in feed.items() if k in names}

    pairs = [(ref, fed(ref)), (session, fed(session))]
    for s, f in pairs:
        for _ in range(warmup):
            s.run(None, f)
    times: list[list[float]] = [[], []]
    start = time.perf_counter()
    while len(times[1]) < min_runs or time.perf_counter() - start < min_seconds:
        for i, (s, f) in enumerate(pairs):
            t0 = time.perf_counter()
            s.run(None, f)
            times[i].append((time.perf_counter() - t0) * 1000)
    return statistics.median(times[1]), statistics.median(times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/bench-demo"))
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument("--min-runs", type=int, default=30)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--calibration-samples", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from transformers import AutoTokenizer

    from kdedge.config import load_config
    from kdedge.data.dataset import load_task
    from kdedge.environment import cpu_info, package_versions
    from kdedge.evaluate import encode, onnx_logits, task_metrics
    from kdedge.quantize import graph
    from kdedge.quantize.modes import TextCalibrationReader, quantize_model, resolve_preset
    from kdedge.runtime import ONNX_FILE, ort_session

    started = time.perf_counter()
    cfg = load_config(args.run / "config.resolved.yaml")
    max_length = cfg.data.max_length
    task = load_task(args.run / "01_data")
    source = args.run / "04_export" / "student"
    tokenizer = AutoTokenizer.from_pretrained(source)
    metric = task.primary_metric
    splits = {name: (task.splits[name].texts[:args.examples],
                     task.splits[name].labels[:args.examples]) for name in ("validation", "test")}
    test_texts = task.splits["test"].texts
    feeds = {bs: dict(encode(tokenizer, test_texts[:bs], max_length, "np",
                             padding="max_length")) for bs in (1, 32)}
    calibration = task.splits["train"].texts[:args.calibration_samples]
    preset = resolve_preset("auto")
    info = cpu_info()

    def score(path: Path) -> dict[str, float]:
        return {name: float(task_metrics(onnx_logits(path, tokenizer, texts, max_length,
                                                     threads=args.threads), labels, task)[metric])
                for name, (texts, labels) in splits.items()}

    rows: list[dict[str, Any]] = []
    ref = ort_session(source / ONNX_FILE, args.threads)  # timed beside every variant
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="kdedge-qbench-"))
    try:
        levels = [lv for lv in args.levels.split(",") if lv]
        for level in levels:
            base = source / ONNX_FILE if level == "none" else graph.optimize(
                source, work / level, level)
            names = [i.name for i in ort_session(base).get_inputs()]

            def reader(names: list[str] = names) -> TextCalibrationReader:
                return TextCalibrationReader(calibration, tokenizer, max_length, 8, names)

            for name, spec in variants(preset):
                path = base if spec is None else work / f"{level}-{len(rows)}.onnx"
                t0 = time.perf_counter()
                try:
                    if spec is not None:
                        quantize_model(base, path, spec, reader, 4)
                    facts = (graph.graph_facts(base, path)
                             if spec is not None and spec.mode != "fp16" else None)
                    row = {"level": level, "variant": name, "build_s": time.perf_counter() - t0,
                           **score(path), "bytes": path.stat().st_size,
                           **timings(path, ref, feeds, args),
                           "int8": None if facts is None else
                           f"{facts['matmul_int8']}/{facts['matmul_total']}"}
                except Exception as err:  # one broken combination must not hide the others
                    row = {"level": level, "variant": name, "error": str(err).splitlines()[0][:160]}
                rows.append(row)
                print(row, flush=True)
                if path != base:
                    path.unlink(missing_ok=True)
        add_o4(rows, source, work, score, feeds, args, ref)
        goal = default_on_full_splits(source, work, preset, task, tokenizer, max_length,
                                      metric, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_table(args, rows, metric, info, preset, package_versions(), max_length,
                time.perf_counter() - started, goal, (load_before, os.getloadavg()))
    print(args.out.read_text())


def timings(path: Path, ref: Any, feeds: dict[int, dict[str, np.ndarray]], args) -> dict[str, float]:
    p1, r1 = paired_latency_ms(path, ref, feeds[1], args.threads, args.min_runs, args.min_seconds)
    p32, r32 = paired_latency_ms(path, ref, feeds[32], args.threads, max(5, args.min_runs // 5),
                                 args.min_seconds)
    return {"p50_1": p1, "ref_1": r1, "p50_32": p32, "ref_32": r32}


def add_o4(rows, source, work, score, feeds, args, ref) -> None:
    """O4 is O3 plus fp16 mixed precision, meant for GPUs; timed here on the CPU all the same."""
    from kdedge.quantize import graph

    try:
        path = graph.optimize(source, work / "O4", "O4")
        rows.append({"level": "O4", "variant": "fp16 mixed precision (GPU level)", "build_s": 0,
                     **score(path), "bytes": path.stat().st_size,
                     **timings(path, ref, feeds, args), "int8": None})
    except Exception as err:
        rows.append({"level": "O4", "variant": "fp16 mixed precision (GPU level)",
                     "error": str(err).splitlines()[0][:160]})
    print(rows[-1], flush=True)


def default_on_full_splits(source, work, preset, task, tokenizer, max_length, metric, args,
                           ) -> dict[str, Any]:
    """The default (dynamic, preset detected, no optimization) against fp32 on the whole
    validation and test splits, for the accuracy target."""
    from kdedge.evaluate import onnx_logits, task_metrics
    from kdedge.quantize.modes import PRESET_TYPES, QuantSpec, quantize_model
    from kdedge.runtime import ONNX_FILE

    activation, weight = PRESET_TYPES[preset]
    path = work / "default.onnx"
    quantize_model(source / ONNX_FILE, path, QuantSpec(preset=preset, activation_type=activation,
                                                       weight_type=weight))
    out: dict[str, Any] = {}
    for name in ("validation", "test"):
        split = task.splits[name]
        for label, model in (("fp32", source), ("int8", path)):
            logits = onnx_logits(model, tokenizer, split.texts, max_length, threads=args.threads)
            out[f"{label}_{name}"] = float(task_metrics(logits, split.labels, task)[metric])
        out[f"{name}_examples"] = len(split.texts)
    return out


def write_table(args, rows, metric, info, preset, versions, max_length, wall_s, goal,
                loads) -> None:
    ref = next(r for r in rows if r["variant"] == "fp32" and "error" not in r)  # first level
    isa = ", ".join(flag for flag, present in info["isa"].items() if present) or "none"
    lines = [
        "# Quantization modes and graph-optimization levels on the demo student",
        "",
        f"`python benchmarks/quantization.py --run {args.run} --examples {args.examples} "
        f"--threads {args.threads}` on the 3-layer demo student (`04_export/student` of a "
        f"`kdedge compress` demo run), {info['model']} ({info['logical_cores']} logical cores; "
        f"{isa}), {args.threads} threads, sequence length {max_length}, preset `{preset}` "
        f"(detected). {metric.capitalize()} on the first {args.examples} validation and test "
        f"examples (one example is {100 / args.examples:.2f} points); static calibration on "
        f"the first {args.calibration_samples} training texts (batches of 8, folded every 4 "
        f"batches). p50 latency timed in-process on real test texts padded to {max_length} "
        "tokens, warm-up discarded, then at least "
        f"{args.min_runs} runs and {args.min_seconds:g} s at batch 1 and "
        f"{max(5, args.min_runs // 5)} runs and {args.min_seconds:g} s at batch 32; every "
        "variant's runs are interleaved with runs of the unoptimized fp32 student, and its "
        "speed-up is against those runs, so background load moves both sides alike "
        f"(load average {loads[0][0]:.1f} at the start, {loads[1][0]:.1f} at the end: absolute "
        "milliseconds are only comparable within a row). Δ is in points of "
        f"{metric} against the unoptimized fp32 student (first row). onnxruntime "
        f"{versions.get('onnxruntime')}, optimum {versions.get('optimum')}, onnx "
        f"{versions.get('onnx')}. Whole run: {wall_s:.0f} s.",
        "",
        f"| level | variant | int8 MatMuls | val {metric} | Δ val | test {metric} | Δ test | "
        "size | size ratio | p50 batch 1 | speed-up b1 | p50 batch 32 | speed-up b32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['level']} | {r['variant']} | failed: {r['error']} |"
                         + " |" * 10)
            continue
        lines.append(
            f"| {r['level']} | {r['variant']} | {r['int8'] or '-'} | {r['validation']:.4f} | "
            f"{100 * (r['validation'] - ref['validation']):+.1f} | {r['test']:.4f} | "
            f"{100 * (r['test'] - ref['test']):+.1f} | {r['bytes'] / 1e6:.1f} MB | "
            f"{ref['bytes'] / r['bytes']:.2f}x | {r['p50_1']:.2f} ms | "
            f"{r['ref_1'] / r['p50_1']:.2f}x | {r['p50_32']:.1f} ms | "
            f"{r['ref_32'] / r['p50_32']:.2f}x |")
    default = next((r for r in rows if r["level"] == "none"
                    and r["variant"] == "dynamic int8 (default)" and "error" not in r), None)
    if default:
        speedup = default["ref_1"] / default["p50_1"]
        drops = {n: 100 * (goal[f"fp32_{n}"] - goal[f"int8_{n}"]) for n in ("validation", "test")}
        lines += ["", f"**The default (`quantize.mode=dynamic`, preset `{preset}`, no graph "
                      f"optimization)**: {speedup:.2f}x the fp32 student's batch-1 speed "
                      f"({default['p50_1']:.2f} vs {default['ref_1']:.2f} ms p50; target 1.5x: "
                      f"{'met' if speedup >= 1.5 else 'NOT met'}). On the whole splits, "
                      f"validation {metric} {goal['fp32_validation']:.4f} -> "
                      f"{goal['int8_validation']:.4f} ({-drops['validation']:+.1f} points, "
                      f"{goal['validation_examples']} examples), test {goal['fp32_test']:.4f} -> "
                      f"{goal['int8_test']:.4f} ({-drops['test']:+.1f} points, "
                      f"{goal['test_examples']} examples); target at most 1 point lost: "
                      f"{'met' if max(drops.values()) <= 1 + 1e-9 else 'NOT met'}."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
