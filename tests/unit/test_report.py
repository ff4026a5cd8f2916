"""Report stage: values from fake manifests with known numbers, never a real model."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from kdedge.artifacts import Manifest
from kdedge.config import build_config, dump_config
from kdedge.errors import KdedgeError
from kdedge.pipeline import RESOLVED_CONFIG, StageContext, stage_dirname
from kdedge.report import stage
from kdedge.report.compare import ARTIFACTS, OPTIONAL, build_report_from_run
from kdedge.report.render import escape_md, render, render_json, render_markdown

LABELS = ["neg", "pos"]
# Known numbers: the reference teacher-onnx is 10 ms at batch 1 and 400 kB (bench size).
ACCURACY = {"teacher-pytorch": 0.90, "teacher-onnx": 0.90, "student-pytorch": 0.88,
            "student-onnx": 0.88, "student-int8": 0.87}
P50 = {"teacher-pytorch": 12.0, "teacher-onnx": 10.0, "student-onnx": 4.0, "student-int8": 2.0}
SIZE = {"teacher-pytorch": 500_000, "teacher-onnx": 400_000, "student-onnx": 200_000,
        "student-int8": 100_000}
ENV = {"cpu": {"model": "Test CPU 9000", "arch": "x86_64",
               "isa": {"avx2": True, "avx512f": True, "avx512_vnni": True},
               "logical_cores": 8, "physical_cores": 4, "ram_bytes": 16 * 2**30},
       "os": "Linux 6.0", "python": "3.11.9",
       "packages": {"torch": "2.13.0", "onnxruntime": "1.22.0"}, "kdedge_git_sha": "abc123"}


def quality(accuracy: float, labels: list[str] = LABELS) -> dict[str, Any]:
    """A metrics block M whose numbers are derived from one accuracy."""
    n = len(labels)
    return {"accuracy": accuracy, "macro_f1": accuracy - 0.01, "examples": 100,
            "per_class": {"precision": [accuracy] * n, "recall": [accuracy] * n,
                          "f1": [accuracy - 0.01] * n, "support": [50] * n},
            "confusion": [[0] * n for _ in range(n)]}


def latency(p50: float, batch: int, seq: int = 64, threads: int = 4) -> dict[str, Any]:
    return {"batch_size": batch, "sequence_length": seq, "threads": threads, "runs": 50,
            "mean_ms": p50 * 1.1,
            "p50_ms": p50, "p90_ms": p50 * 1.2, "p95_ms": p50 * 1.3, "p99_ms": p50 * 1.5,
            "stdev_ms": 0.1, "min_ms": p50 * 0.9, "max_ms": p50 * 2,
            "throughput_samples_per_s": 1000 * batch / (p50 * batch)}


def fake_metrics(accuracy: dict[str, float], p50: dict[str, float],
                 labels: list[str] = LABELS) -> dict[str, dict[str, Any]]:
    """Every stage's metrics, shaped as the other stages write them."""
    history = [{"epoch": e, "train_loss": 1.0 / e, "validation_accuracy": 0.8 + e / 100,
                "seconds": 3.0} for e in (1, 2, 3)]
    bench_models = {
        name: {"runtime": "pytorch" if name.endswith("pytorch") else "onnxruntime",
               "path": f"{name}/model", "size_bytes": SIZE[name], "parameters": None,
               "memory": {"baseline_rss_bytes": 100, "load_peak_rss_bytes": 2000,
                          "inference_peak_rss_bytes": SIZE[name] * 2, "peak_source": "sampled"},
               "runtime_info": {"providers": ["CPUExecutionProvider"], "intra_op_threads": 4},
               "latency": [latency(ms, 1), latency(ms * 10, 32)]}
        for name, ms in p50.items()
    }
    return {
        "data": {"source": {"kind": "local", "files": {"all": {"path": "toy.csv"}}},
                 "labels": labels,
                 "num_labels": len(labels),
                 "splits": {"train": 800, "validation": 100, "test": 100},
                 "label_counts": {s: {label: 10 for label in labels}
                                  for s in ("train", "validation", "test")}},
        "teacher": {"model": "demo", "fine_tuned": True, "cache_hit": False,
                    "parameters": 4_000_000,
                    "validation": quality(accuracy["teacher-pytorch"], labels),
                    "test": quality(accuracy["teacher-pytorch"], labels), "history": history[:1]},
        "distill": {"recipe": "kd", "student": {"source": "3", "layers": [0, 2, 4], "num_layers": 3,
                                               "hidden_size": 32, "parameters": 1_000_000},
                    "validation": quality(accuracy["student-pytorch"], labels),
                    "test": quality(accuracy["student-pytorch"], labels), "best_epoch": 2,
                    "history": history, "reload_max_abs_diff": 0.0},
        "export": {"models": {
            role: {"path": role, "bytes": SIZE[f"{role}-onnx"] - 1000, "opset": 17,
                   "parity": {"max_abs_diff": 2e-6, "atol": 1e-4, "passed": True,
                              "shapes": [[1, 16], [8, 64]]},
                   "validation": quality(accuracy[f"{role}-onnx"], labels),
                   "test": quality(accuracy[f"{role}-onnx"], labels)}
            for role in ("teacher", "student")}},
        "quantize": {"models": {"student-int8": {
            "path": "student-int8", "source": "student", "mode": "dynamic",
            "preset": "avx512_vnni", "per_channel": False, "bytes": 99_000,
            "fp32_bytes": 199_000, "graph": {"matmul_total": 20, "matmul_int8": 18},
            "validation": quality(accuracy["student-int8"], labels),
            "test": quality(accuracy["student-int8"], labels)}}},
        "bench": {"threads": [4], "sequence_lengths": [64], "batch_sizes": [1, 32],
                  "targets": ["cpu"],
                  "protocol": {"warmup_runs": 10, "min_runs": 50, "min_duration_s": 5.0},
                  "models": bench_models, "skipped": {}},
    }


def write_run(root: Path, metrics: dict[str, dict[str, Any]], *,
              min_retained: float = 0.95, seed: int = 7) -> Path:
    """A fake run directory: config.resolved.yaml plus NN_stage/manifest.json per stage."""
    cfg = build_config({"run": {"seed": seed},
                        "report": {"min_retained_accuracy": min_retained}})
    root.mkdir(parents=True, exist_ok=True)
    (root / RESOLVED_CONFIG).write_text(dump_config(cfg))
    for i, (name, stage_metrics) in enumerate(metrics.items()):
        folder = root / stage_dirname(name)
        folder.mkdir()
        Manifest(stage=name, fingerprint=f"fp{i:014d}", config={name: {}, "seed": seed},
                 inputs={}, started_at="2025-01-01T00:00:00+00:00", duration_s=1.5,
                 metrics=stage_metrics, environment=ENV).save(folder)
    return root


def row(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in report["artifacts"] if r["name"] == name)


def test_recommends_fastest_artifact_that_keeps_enough_accuracy(tmp_path: Path) -> None:
    report = build_report_from_run(write_run(tmp_path, fake_metrics(ACCURACY, P50)))
    rec = report["recommendation"]
    assert rec["artifact"] == "student-int8"
    assert rec["fallback"] is False
    assert rec["accuracy_floor"] == pytest.approx(0.95 * 0.90)
    assert [c["rank"] for c in rec["candidates"]] == [3, 2, 1]
    runner_up = rec["trade_offs"][0]
    assert runner_up["against"] == "student-onnx" and runner_up["kind"] == "runner_up"
    assert runner_up["speedup"] == pytest.approx(4.0 / 2.0)
    assert runner_up["accuracy_delta"] == pytest.approx(0.87 - 0.88)
    assert rec["headline"]["speedup"] == pytest.approx(10.0 / 2.0)
    assert rec["headline"]["retained_accuracy"] == pytest.approx(0.87 / 0.90)


def test_falls_back_when_fast_artifact_loses_too_much(tmp_path: Path) -> None:
    accuracy = {**ACCURACY, "student-int8": 0.80}  # 88.9% of the teacher: below 95%
    rec = build_report_from_run(write_run(tmp_path, fake_metrics(accuracy, P50)))["recommendation"]
    assert rec["artifact"] == "student-onnx"
    excluded = [t for t in rec["trade_offs"] if t["kind"] == "faster_but_below_floor"]
    assert [t["against"] for t in excluded] == ["student-int8"]
    assert any("student-int8" in r and "below the 95.0% floor" in r for r in rec["reasons"])


def test_recommends_teacher_when_no_student_keeps_enough(tmp_path: Path) -> None:
    accuracy = {**ACCURACY, "student-onnx": 0.84, "student-int8": 0.80}
    rec = build_report_from_run(write_run(tmp_path, fake_metrics(accuracy, P50)))["recommendation"]
    assert rec["artifact"] == "teacher-onnx"
    assert rec["fallback"] is True
    assert "no compressed artifact keeps at least 95.0%" in rec["summary"]
    assert {t["against"] for t in rec["trade_offs"]} == {"student-onnx", "student-int8"}


def test_floor_is_inclusive_and_read_from_the_run_config(tmp_path: Path) -> None:
    accuracy = {**ACCURACY, "teacher-onnx": 0.80, "student-int8": 0.76}  # exactly 95% of 0.80
    run = write_run(tmp_path / "a", fake_metrics(accuracy, P50))
    assert build_report_from_run(run)["recommendation"]["artifact"] == "student-int8"
    strict = write_run(tmp_path / "b", fake_metrics(accuracy, P50), min_retained=0.99)
    assert build_report_from_run(strict)["recommendation"]["artifact"] == "student-onnx"


def test_latency_tie_goes_to_the_smaller_artifact(tmp_path: Path) -> None:
    p50 = {**P50, "student-onnx": 2.0}  # same p50 as student-int8, twice its size
    rec = build_report_from_run(write_run(tmp_path, fake_metrics(ACCURACY, p50)))["recommendation"]
    assert rec["artifact"] == "student-int8"
    assert rec["trade_offs"][0]["size_ratio"] == pytest.approx(2.0)


def test_speedup_and_size_ratios_against_teacher_onnx(tmp_path: Path) -> None:
    report = build_report_from_run(write_run(tmp_path, fake_metrics(ACCURACY, P50)))
    int8 = row(report, "student-int8")["vs_reference"]
    assert int8["speedup"] == {"1": pytest.approx(10.0 / 2.0), "32": pytest.approx(100.0 / 20.0)}
    assert int8["size_ratio"] == pytest.approx(400_000 / 100_000)
    assert int8["memory_ratio"] == pytest.approx(800_000 / 200_000)
    assert row(report, "student-onnx")["vs_reference"]["speedup"]["1"] == pytest.approx(2.5)
    assert row(report, "teacher-pytorch")["vs_reference"]["speedup"]["1"] == pytest.approx(10 / 12)
    assert row(report, "teacher-onnx")["vs_reference"]["size_ratio"] == pytest.approx(1.0)
    assert row(report, "student-int8")["retained_accuracy"] == pytest.approx(0.87 / 0.90)
    quant = report["quantization"]["models"]["student-int8"]
    assert quant["accuracy_delta"] == pytest.approx(0.87 - 0.88)
    assert quant["size_ratio"] == pytest.approx(199_000 / 99_000)
    assert quant["matmul_int8"] == 18
    assert report["training"]["distill"]["parameter_ratio"] == pytest.approx(4.0)
    md = render_markdown(report)
    assert "| student-int8 (recommended) | cpu | onnxruntime | int8 | 87.00% |" in md
    assert "5.00×" in md and "4.00×" in md


def test_an_asked_for_absent_target_is_one_warning_and_no_rows(tmp_path: Path) -> None:
    metrics = fake_metrics(ACCURACY, P50)
    reason = "torch 2.13.0+cpu sees no CUDA device"
    metrics["bench"]["skipped_targets"] = {"cuda": reason}
    report = build_report_from_run(write_run(tmp_path / "run", metrics))
    assert [row["name"] for row in report["artifacts"] if row["target"] != "cpu"] == []
    assert report["benchmark"]["skipped_targets"] == {"cuda": reason}
    assert [n for n in report["notes"] if "cuda" in n] == [
        f"The bench skipped target cuda, which bench.targets asked for: {reason}."]
    assert [v["target"] for v in report["recommendation"]["per_target"]] == ["cpu"]


def test_gpu_targets_and_the_sweep_are_reported_apart_from_the_cpu(tmp_path: Path) -> None:
    metrics = fake_metrics(ACCURACY, P50)
    bench = metrics["bench"]
    bench.update(threads=[4, 1], sequence_lengths=[64, 128], targets=["cpu", "cuda"])
    bench["models"]["student-int8"]["latency"] += [latency(6.0, 1, threads=1),
                                                   latency(5.0, 1, seq=128)]
    for name, ms in (("teacher-onnx@cuda", 2.0), ("student-onnx@cuda", 0.5)):
        entry = copy.deepcopy(bench["models"][name.partition("@")[0]])
        entry.update(target="cuda", latency=[latency(ms, 1), latency(ms * 2, 32)])
        bench["models"][name] = entry
    no_torch_gpu = "torch 2.13.0+cpu sees no CUDA device"
    bench["skipped"] = {"teacher-pytorch@cuda": no_torch_gpu,
                        "student-pytorch@cuda": no_torch_gpu}
    report = build_report_from_run(write_run(tmp_path / "run", metrics))

    rows = {row["name"]: row for row in report["artifacts"]}
    gpu = rows["student-onnx@cuda"]
    assert gpu["target"] == "cuda" and rows["student-onnx"]["target"] == "cpu"
    assert gpu["test"] == rows["student-onnx"]["test"]  # the same ONNX file, scored once
    # timed against the teacher on the same GPU (2.0 / 0.5), never against the CPU's 10 ms
    assert gpu["vs_reference"]["speedup"] == {"1": pytest.approx(4.0), "32": pytest.approx(4.0)}
    # a model not timed on the GPU has no row there (no quality copied from the CPU), one note
    assert "teacher-pytorch@cuda" not in rows and "student-pytorch@cuda" not in rows
    # what to ship differs per target: int8 on the CPU, the fp32 student on the GPU
    assert [(v["target"], v["artifact"]) for v in report["recommendation"]["per_target"]] == [
        ("cpu", "student-int8"), ("cuda", "student-onnx")]
    assert report["recommendation"]["per_target"][1]["sentence"] == (
        "cuda: ship student-onnx (0.50 ms p50 at batch 1, faster than teacher-onnx there).")
    assert [name for name in report["per_class"]["f1"] if "@" in name] == []
    # the headline is the first thread count and length; the recommendation stays on the CPU
    assert rows["student-int8"]["latency"]["1"]["p50_ms"] == pytest.approx(2.0)
    assert report["recommendation"]["artifact"] == "student-int8"
    assert report["benchmark"]["threads"] == 4 and report["benchmark"]["sequence_length"] == 64
    assert report["benchmark"]["threads_swept"] == [4, 1]
    sweep = [(p["artifact"], p["threads"], p["sequence_length"], p["batch_size"], p["p50_ms"])
             for p in report["benchmark"]["sweep"] if p["artifact"] == "student-int8"]
    assert sweep == [("student-int8", 4, 64, 1, 2.0), ("student-int8", 4, 64, 32, 20.0),
                     ("student-int8", 1, 64, 1, 6.0), ("student-int8", 4, 128, 1, 5.0)]
    assert (f"The bench skipped teacher-pytorch@cuda, student-pytorch@cuda: {no_torch_gpu}."
            in report["notes"])
    md = render_markdown(report)
    assert "### Sweep" in md and "| student-int8 | 1 | 64 | 1 | 6.00 |" in md
    assert "| student-onnx@cuda |" in md


def test_markdown_escapes_user_strings(tmp_path: Path) -> None:
    label = "a|b <b>bold</b> *x*"
    metrics = fake_metrics(ACCURACY, P50, labels=["ok_label", label])
    metrics["teacher"]["model"] = "`evil` [link](http://x)"
    md = render_markdown(build_report_from_run(write_run(tmp_path, metrics)))
    assert label not in md and "<b>" not in md
    escaped = r"a\|b &lt;b&gt;bold&lt;/b&gt; \*x\*"
    assert escape_md(label) == escaped
    assert f"| {escaped} |" in md  # its row in the per-class and label tables
    assert r"ok\_label" in md
    assert r"\`evil\` \[link\](http://x)" in md
    assert escape_md("1. not a list\nsecond line", line_start=True) == r"1\. not a list second line"
    assert escape_md("- item", line_start=True) == r"\- item"
    assert escape_md("3.11.9") == "3.11.9"  # inside a cell or bullet a version stays readable


def test_stage_writes_reports_that_round_trip(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", fake_metrics(ACCURACY, P50))
    work = run / ".07_report.partial"
    work.mkdir()
    cfg = build_config({"run": {"seed": 7}})
    ctx = StageContext(cfg, run, work, fingerprint="f", input_fingerprints={})
    summary = stage.run(ctx)
    assert summary["recommended"] == "student-int8"
    assert summary["speedup"] == pytest.approx(5.0)
    assert summary["size_ratio"] == pytest.approx(4.0)
    assert summary["files"] == ["report.json", "report.md", "report.html"]
    json.dumps(summary, allow_nan=False)  # it goes into the manifest

    data = json.loads((work / "report.json").read_text(encoding="utf-8"))
    assert data["schema_version"] == 1
    assert data == build_report_from_run(run)
    assert json.loads(render_json(data)) == data
    assert data["reproducibility"]["seed"] == 7
    assert data["reproducibility"]["config_path"] == "config.resolved.yaml"
    assert data["reproducibility"]["stages"]["distill"]["fingerprint"] == "fp00000000000002"
    assert data["environment"]["cpu"]["isa"]["avx512_vnni"] is True

    md = (work / "report.md").read_text(encoding="utf-8")
    assert md.index("## Verdict") < md.index("## Artifacts")
    for name in ARTIFACTS:
        assert (f"| {name}" in md) == (name not in OPTIONAL)
    for text in ("Test CPU 9000", "avx512\\_vnni yes", "fp00000000000005", "config.resolved.yaml",
                 "18 of 20", "2.00e-06", "pass", "- files.all.path: toy.csv",
                 "| teacher-pytorch | 1 | 12.00 | 14.40 | 15.60 | 18.00 | 10.80 | 24.00 | 83.3 | 0.83× "
                 "| 50 |",
                 "providers CPUExecutionProvider, intra\\_op\\_threads 4"):
        assert text in md


def test_missing_parts_render_as_na(tmp_path: Path) -> None:
    metrics = fake_metrics(ACCURACY, P50)
    del metrics["quantize"]
    bench = metrics["bench"]
    del bench["models"]["student-int8"]
    bench["models"]["student-onnx"] = {}  # entry present but empty
    bench["skipped"] = {"student-int8": "no int8 model in this run"}
    report = build_report_from_run(write_run(tmp_path, metrics))
    assert report["missing_stages"] == ["quantize"]
    assert report["quantization"] is None
    assert row(report, "student-int8")["produced"] is False
    assert row(report, "student-onnx")["vs_reference"]["speedup"]["1"] is None
    # student-onnx qualifies but has no latency: the teacher is the safe default
    assert report["recommendation"]["artifact"] == "teacher-onnx"
    md = render_markdown(report)
    assert "| student-int8 | cpu | onnxruntime | int8 | n/a | n/a | n/a | n/a | n/a |" in md
    assert "Not benchmarked: student-pytorch; student-onnx; student-int8 (no int8 model in this run)." in md
    assert "No quantized model in this run (n/a)." in md
    assert "The bench skipped student-int8: no int8 model in this run." in md
    json.loads(render_json(report))


def test_empty_run_does_not_crash(tmp_path: Path) -> None:
    report = build_report_from_run(tmp_path)
    assert report["recommendation"]["artifact"] is None
    md = render_markdown(report)
    assert "**No recommendation**" in md
    assert "None" not in md
    for name in ARTIFACTS:
        assert (f"| {name} |" in md) == (name not in OPTIONAL)


def test_nan_in_a_manifest_becomes_null(tmp_path: Path) -> None:
    metrics = fake_metrics(ACCURACY, P50)
    broken = copy.deepcopy(metrics)
    broken["export"]["models"]["student"]["parity"]["max_abs_diff"] = float("nan")
    report = build_report_from_run(write_run(tmp_path, broken))
    assert report["export"]["models"]["student"]["max_abs_diff"] is None
    json.loads(render_json(report))


def test_unknown_format_lists_the_known_ones() -> None:
    with pytest.raises(KdedgeError, match="known: html, json, md"):
        render("pdf", {})


def test_warnings_name_failed_parity_and_remarks_name_missing_vnni(tmp_path: Path) -> None:
    metrics = fake_metrics(ACCURACY, P50)
    metrics["export"]["models"]["student"]["parity"].update(max_abs_diff=0.5, passed=False)
    run = write_run(tmp_path, metrics)
    bench_dir = run / stage_dirname("bench")
    manifest = Manifest.load(bench_dir)
    manifest.environment = copy.deepcopy(ENV)
    manifest.environment["cpu"].update(model="Old CPU", isa={"avx2": True, "avx512_vnni": False})
    manifest.save(bench_dir)
    report = build_report_from_run(run)
    notes = " ".join(report["notes"])
    assert "Export parity FAILED for student: max abs diff 5.00e-01 exceeds atol 1.00e-04" in notes
    # the CPU's int8 support explains a speed-up; it is a remark, not a warning
    assert "VNNI" not in notes and "vnni" not in notes
    assert report["remarks"] == [
        "This CPU has no VNNI (avx512_vnni / avx_vnni) or ARM dot-product instructions: int8 "
        "speed-ups measured here understate what such CPUs give.",
        "student-int8 was quantized for avx512_vnni, but the bench CPU lacks it."]
    assert "The data stage ran on another CPU (Test CPU 9000)" in notes
    assert report["environment"]["cpu"]["model"] == "Old CPU"
    md = render_markdown(report)
    assert md.index("## Warnings") < md.index("## Artifacts")
    assert "| student | student | 17 | 5.00e-01 | 1.00e-04 | FAIL |" in md


def test_training_history_shows_recipe_phases() -> None:
    from kdedge.report.builders import history_table
    from kdedge.report.render import table_lines

    history = [{"phase": "anneal", "epoch": 1, "train_loss": 0.5, "validation_accuracy": 0.7,
                "seconds": 2.0},
               {"phase": "finetune", "epoch": 1, "train_loss": 0.4, "validation_accuracy": 0.8,
                "seconds": 3.0, "examples_per_s": 412.345}]
    lines = table_lines(history_table(history, best_epoch=1))
    assert lines[0] == "| Phase | Epoch | Train loss | Validation accuracy | Seconds | Examples/s |"
    assert lines[2] == "| anneal | 1 | 0.5000 | 70.00% | 2.0 | n/a |"  # best_epoch: in the last phase
    assert lines[3] == "| finetune | 1 (best) | 0.4000 | 80.00% | 3.0 | 412.3 |"


@pytest.mark.parametrize(("processes", "shown"), [
    (None, "n/a"),
    ({"world_size": 1, "backend": None, "device": "cpu"}, "1 (cpu)"),
    ({"world_size": 4, "backend": "nccl", "device": "cuda:0"}, "4 (nccl, cuda:0 on the main one)"),
])
def test_the_processes_a_stage_trained_on_are_shown(processes: dict | None, shown: str) -> None:
    from kdedge.report.formatting import fmt_processes

    assert fmt_processes(processes) == shown


PEARSON = {"teacher-pytorch": 0.90, "teacher-onnx": 0.90, "student-pytorch": 0.89,
           "student-onnx": 0.89, "student-int8": 0.87}


def regression_metrics(pearson: dict[str, float]) -> dict[str, dict[str, Any]]:
    """fake_metrics for a regression task: Pearson / Spearman / MSE blocks, score statistics."""
    metrics = fake_metrics(ACCURACY, P50)

    def scores(value: float) -> dict[str, Any]:
        return {"pearson": value, "spearman": value - 0.02, "mse": round(1 - value, 6), "examples": 100}

    blocks = {"teacher-pytorch": metrics["teacher"], "student-pytorch": metrics["distill"],
              "teacher-onnx": metrics["export"]["models"]["teacher"],
              "student-onnx": metrics["export"]["models"]["student"],
              "student-int8": metrics["quantize"]["models"]["student-int8"]}
    for name, block in blocks.items():
        block.update(validation=scores(pearson[name] + 0.01), test=scores(pearson[name]))
    for part in ("teacher", "distill"):  # the trainer's key since regression
        metrics[part]["history"] = [{"epoch": h["epoch"], "train_loss": h["train_loss"],
                                     "validation_score": h["validation_accuracy"],
                                     "seconds": h["seconds"]} for h in metrics[part]["history"]]
    metrics["data"] = {**metrics["data"], "task": "regression", "primary_metric": "pearson",
                       "labels": ["score"], "num_labels": 1,
                       "label_stats": {s: {"mean": 2.5, "std": 1.25, "min": 0.0, "max": 5.0}
                                       for s in ("train", "validation", "test")}}
    del metrics["data"]["label_counts"]
    return metrics


def test_regression_is_judged_by_pearson(tmp_path: Path) -> None:
    report = build_report_from_run(write_run(tmp_path, regression_metrics(PEARSON)))
    assert (report["task"], report["primary_metric"]) == ("regression", "pearson")
    rec = report["recommendation"]
    assert rec["artifact"] == "student-int8"  # keeps 0.87 / 0.90 = 96.7% of the teacher's Pearson
    assert rec["pearson_floor"] == pytest.approx(0.95 * 0.90)
    assert rec["headline"]["retained_pearson"] == pytest.approx(0.87 / 0.90)
    assert rec["trade_offs"][0]["pearson_delta"] == pytest.approx(0.87 - 0.89)
    int8 = row(report, "student-int8")
    assert int8["test"] == {"pearson": 0.87, "spearman": 0.85, "mse": 0.13, "examples": 100}
    assert report["per_class"] is None
    quant = report["quantization"]["models"]["student-int8"]
    assert quant["pearson_delta"] == pytest.approx(0.87 - 0.89)
    assert quant["test_spearman"] == pytest.approx(0.85) and quant["test_mse"] == pytest.approx(0.13)
    assert report["export"]["models"]["teacher"]["test_pearson"] == 0.90
    assert report["training"]["distill"]["history"][1]["validation_pearson"] == pytest.approx(0.82)
    assert report["data"]["label_stats"]["test"]["std"] == 1.25
    assert "accuracy" not in render_json(report).replace("min_retained_accuracy", "")
    md = render_markdown(report)
    assert "accuracy" not in md.lower()
    for text in ("| Artifact | Target | Runtime | Precision | Test Pearson | Spearman | MSE | Retained vs",
                 "| student-int8 (recommended) | cpu | onnxruntime | int8 | 0.8700 | 0.8500 | 0.1300 "
                 "| 96.7% |",
                 "whose test Pearson is at least 95.0% of teacher-onnx's (0.8550 here)",
                 "- test Spearman: 0.8700 → 0.8500 (-0.0200)",
                 "| Epoch | Train loss | Validation Pearson | Seconds |",
                 "| test | 2.5000 | 1.2500 | 0.0000 | 5.0000 |", "- task: regression"):
        assert text in md


def test_regression_fallback_names_the_pearson_floor(tmp_path: Path) -> None:
    pearson = {**PEARSON, "student-onnx": 0.80, "student-int8": 0.79}
    report = build_report_from_run(write_run(tmp_path, regression_metrics(pearson)))
    rec = report["recommendation"]
    assert rec["artifact"] == "teacher-onnx" and rec["fallback"] is True
    assert any("keeps 88.9% of teacher-onnx's test Pearson (0.8000), below the 95.0% floor" in r
               for r in rec["reasons"])
    assert "(fallback: no student met the Pearson floor)" in render_markdown(report)


def test_other_teachers_tasks_and_selection_are_reported(tmp_path: Path) -> None:
    metrics = fake_metrics(ACCURACY, P50)
    metrics["distill"] = {**metrics["distill"], "recipe": "multi-teacher",
                          "extra_teachers": [{"model": "second", "fine_tuned": True,
                                              "test": {"accuracy": 0.81, "macro_f1": 0.8}}],
                          "tasks": {"news": {"labels": ["a", "b"], "teacher_test": {"accuracy": 0.9},
                                             "test": {"accuracy": 0.88, "macro_f1": 0.87}}},
                          "multi_task_teacher": {
                              "cache_hit": False, "best_epoch": 2, "mean_validation_score": 0.8512,
                              "history": [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}],
                              "scores": {"target": {"test": {"accuracy": 0.905}},
                                         "news": {"test": {"accuracy": 0.9}}}},
                          "history": [{"phase": "multi-teacher", "epoch": 1, "train_loss": 0.5,
                                       "validation_score": 0.7, "seconds": 2.0,
                                       "teacher0_selected": 0.9, "teacher1_selected": 0.25}]}
    data = build_report_from_run(write_run(tmp_path / "run", metrics))
    distill = data["training"]["distill"]
    assert distill["extra_teachers"] == [{"model": "second", "fine_tuned": True,
                                          "test_accuracy": 0.81}]
    assert distill["other_tasks"]["news"] == {"labels": ["a", "b"], "test": 0.88,
                                              "teacher_test": 0.9, "metric": "accuracy"}
    assert distill["multi_task_teacher"] == {"best_epoch": 2, "mean_validation_score": 0.8512,
                                             "epochs": 3, "cache_hit": False,
                                             "test_accuracy": 0.905}
    assert distill["history"][0]["teachers_used"] == [0.9, 0.25]
    md = render_markdown(data)
    assert "- teacher 2: second, test accuracy 81.00%" in md
    assert "- task news: accuracy of the multi-task student 0.8800 (its teacher 0.9000), test split" in md
    assert "| multi-teacher | 1 | 0.5000 | 70.00% | 2.0 | n/a | 0.90 / 0.25 |" in md
    teacher_test = f"{data['training']['teacher']['test_accuracy']:.2%}"
    assert ("- multi-task teacher: one teacher fine-tuned on every task (fine-tuned here for 3 "
            "epoch(s), best 2; mean validation score 0.8512); test accuracy on this task 90.50%, "
            f"the single-task teacher's {teacher_test}") in md
    assert "multi-task teacher" not in render_markdown(build_report_from_run(
        write_run(tmp_path / "plain", fake_metrics(ACCURACY, P50))))


def test_an_int8_student_that_failed_the_gate_is_not_recommended(tmp_path: Path) -> None:
    metrics = fake_metrics(ACCURACY, P50)
    reason = ("no quantized model kept validation accuracy within 0.0100 of fp32's 0.9000 "
              "(quantize.max_drop=0.01); the best, dynamic u8/s8, lost 0.0300")
    metrics["quantize"]["models"]["student-int8"]["gate"] = {
        "passed": False, "metric": "accuracy", "max_drop": 0.01, "allowed_drop": 0.01,
        "reason": reason, "fallback_used": True,
        "attempts": [{"step": "asked", "label": "static minmax u8/s8", "validation_accuracy": 0.85,
                      "drop": 0.05, "passed": False, "bytes": 90_000, "batch1_p50_ms": 1.5},
                     {"step": "dynamic", "label": "dynamic u8/s8", "validation_accuracy": 0.87,
                      "drop": 0.03, "passed": False, "bytes": 99_000, "batch1_p50_ms": 2.0}]}
    report = build_report_from_run(write_run(tmp_path, metrics))
    rec = report["recommendation"]
    assert rec["artifact"] == "student-onnx"  # the fp32 student ships
    int8 = next(c for c in rec["candidates"] if c["name"] == "student-int8")
    assert not int8["qualifies"] and "failed the quantization gate" in int8["status"]
    assert any(reason in r for r in rec["reasons"])
    assert any("failed the quantization gate" in n for n in report["notes"])
    quant = report["quantization"]["models"]["student-int8"]
    assert quant["gate"]["passed"] is False and len(quant["attempts"]) == 2
    md = render_markdown(report)
    assert "validation gate: FAILED: no quantized model kept validation accuracy" in md
    assert "| dynamic | dynamic u8/s8 | 0.8700 |" in md


def device_results(target: str = "pi5", p50: float = 8.0) -> dict[str, Any]:
    """What `kdedge bench BUNDLE --target pi5` writes on a device."""
    entry = {"runtime": "onnxruntime", "path": "bundle", "size_bytes": 120_000,
             "parameters": None, "memory": {"baseline_rss_bytes": 50, "load_peak_rss_bytes": 90,
                                            "inference_peak_rss_bytes": 100},
             "latency": [latency(p50, 1), latency(p50 * 8, 32)]}
    return {"target": target, "threads": [4], "sequence_lengths": [64], "batch_sizes": [1, 32],
            "environment": {"cpu": {"model": "Cortex-A76", "arch": "aarch64",
                                    "isa": {"asimddp": True, "avx2": False}},
                            "os": "Linux 6.6", "packages": {"onnxruntime": "1.31.1"}},
            "models": {"student-int8": entry}, "skipped": {"teacher-onnx": "not in the bundle"}}


def test_a_device_bench_joins_the_report_as_its_own_target(tmp_path: Path) -> None:
    from kdedge.report.targets import add_bench

    run = write_run(tmp_path / "run", fake_metrics(ACCURACY, P50))
    path = tmp_path / "pi5.json"
    path.write_text(json.dumps(device_results()))
    assert add_bench(run, path) == "pi5"
    report = build_report_from_run(run)

    rows = {row["name"]: row for row in report["artifacts"]}
    device = rows["student-int8@pi5"]
    assert device["target"] == "pi5" and device["test"] == rows["student-int8"]["test"]
    assert device["latency"]["1"]["p50_ms"] == 8.0 and device["latency"]["32"]["p50_ms"] == 64.0
    assert device["vs_reference"]["speedup"] == {"1": None, "32": None}  # no teacher on the pi5
    assert "teacher-onnx@pi5" not in rows
    assert "The bench skipped teacher-onnx@pi5: not in the bundle." in report["notes"]
    assert report["recommendation"]["artifact"] == "student-int8"  # ranked on this machine
    verdicts = {v["target"]: v for v in report["recommendation"]["per_target"]}
    assert list(verdicts) == ["cpu", "pi5"]
    assert verdicts["cpu"]["artifact"] == "student-int8"
    assert verdicts["pi5"] == {"target": "pi5", "artifact": "student-int8", "p50_ms": 8.0,
                               "batch_size": 1, "timed": ["student-int8"],
                               "sentence": "pi5: ship student-int8 (8.00 ms p50 at batch 1, the "
                                           "only qualifying candidate timed there)."}
    added = report["added_targets"]
    assert added == [{"target": "pi5", "cpu_model": "Cortex-A76", "arch": "aarch64",
                      "isa": {"asimddp": True}, "os": "Linux 6.6",
                      "packages": {"onnxruntime": "1.31.1"}, "threads": [4],
                      "sequence_lengths": [64], "batch_sizes": [1, 32],
                      "models": ["student-int8"]}]
    md = render_markdown(report)
    assert "| pi5 | Cortex-A76 (aarch64) | asimddp | Linux 6.6 | 4 | 64 | student-int8 |" in md
    assert "| student-int8@pi5 |" in md

    # a second file for the same target replaces the first
    path.write_text(json.dumps(device_results(p50=5.0)))
    add_bench(run, path)
    rows = {row["name"]: row for row in build_report_from_run(run)["artifacts"]}
    assert rows["student-int8@pi5"]["latency"]["1"]["p50_ms"] == 5.0


@pytest.mark.parametrize(("content", "message"), [
    (None, r"nowhere\.json does not exist; pass the JSON that `kdedge bench` wrote"),
    ("{not json", r"is not valid JSON .*pass the file `kdedge bench` wrote, unedited"),
    (json.dumps(device_results(target="cpu")), r"names target 'cpu', which this run's own bench"),
    (json.dumps(device_results(target="../x")), r"names target '\.\./x', which is not a short"),
    (json.dumps({**device_results(), "models": {"m": {"latency": {"1": {}}}}}),
     r"has no per-model latency lists under 'models'"),
    (json.dumps({**device_results(), "probe": {"candidates": {}}}),
     r"nowhere\.json holds a probe bundle's times for the student search, not a run's models; "
     r"pass it to `kdedge compress --target-latency`, and add the bench of the run's bundle "
     r"here\.$"),
])
def test_a_bad_device_bench_file_is_refused_and_changes_nothing(
        tmp_path: Path, content: str | None, message: str) -> None:
    from kdedge.report.targets import ADDED_DIR, add_bench

    path = tmp_path / "nowhere.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KdedgeError, match=message):
        add_bench(tmp_path / "run", path)
    assert not (tmp_path / "run" / ADDED_DIR).exists()
