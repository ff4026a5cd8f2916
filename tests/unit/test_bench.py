"""The bench stage: golden statistics, the run floors, spawned measurements, skips and errors."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import VOCAB, toy_rows

from kdedge.artifacts import read_json
from kdedge.bench import stage as bench_stage
from kdedge.bench.isolate import ChildFailed, Reporter, run_watched
from kdedge.bench.measure import bench_model, encode_texts, make_batches, typical_length
from kdedge.bench.runners import (
    RUNTIMES,
    bound_runner,
    guess_runtime,
    missing_files,
    onnx_parameters,
    runtime_for,
    split_targets,
    target_unavailable,
)
from kdedge.bench.stats import latency_at, percentile, summarize, timed_runs, without_timings
from kdedge.config import KdedgeConfig
from kdedge.errors import KdedgeError
from kdedge.pipeline import StageContext, stage_dirname

SEQ = 16
TINY = {"warmup_runs": 1, "min_runs": 3, "min_duration_s": 0.0}
STAT_KEYS = {"batch_size", "sequence_length", "runs", "mean_ms", "p50_ms", "p90_ms", "p95_ms",
             "p99_ms", "stdev_ms", "min_ms", "max_ms", "throughput_samples_per_s", "timings_ms"}
MEMORY_KEYS = {"baseline_rss_bytes", "load_peak_rss_bytes", "inference_peak_rss_bytes"}
POINT_KEYS = STAT_KEYS | {"threads"}  # a bench grid point: the stats and where it was taken


def folder_bytes(folder: Path) -> int:
    """Independent of the code under test: os.walk, not rglob."""
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(folder) for name in names)


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from optimum.exporters.onnx import main_export

    out = tmp_path_factory.mktemp("tiny-onnx")
    with warnings.catch_warnings():  # the exporter's tracer and deprecation notices are not ours
        warnings.simplefilter("ignore")
        main_export(model_name_or_path=str(tiny_model_dir), output=out,
                    task="text-classification", do_validation=False)
    return out


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [row["sentence"] for row in toy_rows(20)]


# --- the sequence length: what the data's texts need -----------------------------------------

def test_the_default_length_is_what_95_percent_of_the_texts_fit(tiny_model_dir: Path) -> None:
    short, long = "good film", " ".join(["the movie"] * 15)  # 4 and 32 tokens with [CLS], [SEP]
    # the 95th percentile (the higher row) of 40 counts is the 39th smallest, rounded up to 8
    assert typical_length(tiny_model_dir, [short] * 39 + [long], cap=128) == 8
    assert typical_length(tiny_model_dir, [short] * 37 + [long] * 3, cap=128) == 32
    assert typical_length(tiny_model_dir, [short] * 37 + [long] * 3, cap=24) == 24
    assert typical_length(tiny_model_dir, [("good film", "the movie was fun")] * 4, cap=128) == 16
    assert typical_length(tiny_model_dir, [], cap=48) == 48


def test_bench_lengths_come_from_the_config_else_the_texts_else_max_length(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    from kdedge.data.dataset import TaskData, TaskSplit

    long = " ".join(["the movie"] * 15)
    splits = {"validation": TaskSplit([long] * 3, np.zeros(3, dtype=np.int64)),
              "test": TaskSplit(["good"] * 3, np.ones(3, dtype=np.int64))}
    task = TaskData(labels=["neg", "pos"], splits=splits)
    cfg = KdedgeConfig.model_validate({"data": {"max_length": 64}})
    assert bench_stage.sequence_lengths(cfg, task, tiny_model_dir) == (
        [32], "95% of the validation and test texts fit; data.max_length 64")
    assert bench_stage.sequence_lengths(cfg, task, tmp_path) == ([64], "data.max_length")
    chosen = cfg.model_copy(update={"bench": cfg.bench.model_copy(update={"sequence_lengths": (48,)})})
    assert bench_stage.sequence_lengths(chosen, task, tiny_model_dir) == (
        [48], "bench.sequence_lengths")


# --- stats: pure functions, golden numbers ---------------------------------------------------


def test_percentiles_match_linear_interpolation() -> None:
    values = [7.0, 1.0, 10.0, 3.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0]  # 1..10, shuffled
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0
    assert percentile([4.0], 99) == 4.0
    for q in (50, 90, 95, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_of_a_known_list() -> None:
    values = [float(v) for v in range(1, 11)]
    row = summarize(values, batch_size=4, sequence_length=32)
    assert set(row) == STAT_KEYS
    assert row["runs"] == 10 and row["batch_size"] == 4 and row["sequence_length"] == 32
    assert row["mean_ms"] == 5.5
    assert (row["p50_ms"], row["p90_ms"], row["p95_ms"], row["p99_ms"]) == (5.5, 9.1, 9.55, 9.91)
    assert row["stdev_ms"] == 3.02765  # sample stdev (n - 1), rounded to the ns
    assert (row["min_ms"], row["max_ms"]) == (1.0, 10.0)
    assert row["throughput_samples_per_s"] == 727.273  # 4 samples / 5.5 ms
    assert row["timings_ms"] == values
    assert summarize([2.0], 1, 8)["stdev_ms"] == 0.0


def test_without_timings_drops_only_raw_lists() -> None:
    tree = {"models": {"a": {"latency": {"1": {"p50_ms": 1.0, "timings_ms": [1.0]}}}}, "x": [1]}
    assert without_timings(tree) == {"models": {"a": {"latency": {"1": {"p50_ms": 1.0}}}},
                                     "x": [1]}
    assert "timings_ms" in tree["models"]["a"]["latency"]["1"]  # the input is not changed


class FakeClock:
    """Time that moves only when the fake model runs, so run counts are exact."""

    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 0.0, step_s
        self.fed: list[Any] = []

    def __call__(self) -> float:
        return self.now

    def model(self, feed: Any) -> None:
        self.fed.append(feed)
        self.now += self.step_s


def test_timed_runs_respect_min_runs_when_duration_is_short() -> None:
    clock = FakeClock(0.25)
    timings = timed_runs(clock.model, ["a", "b", "c"], warmup_runs=2, min_runs=5,
                         min_duration_s=0.5, clock=clock)
    assert timings == pytest.approx([250.0] * 5)
    assert clock.fed == ["a", "b", "c", "a", "b", "c", "a"]  # warm-up untimed, batches cycled


def test_timed_runs_respect_min_duration_when_runs_are_fast() -> None:
    clock = FakeClock(0.25)
    timings = timed_runs(clock.model, ["a", "b", "c"], warmup_runs=3, min_runs=2,
                         min_duration_s=1.0, clock=clock)
    assert len(timings) == 4  # 4 x 0.25 s reaches the 1 s floor; min_runs alone would stop at 2
    assert clock.fed[3:] == ["a", "b", "c", "a"]
    assert len(timed_runs(clock.model, ["a"], 0, 3, 0.0, clock=clock)) == 3


# --- inputs: the same tokens transformers would give ------------------------------------------


def test_encode_texts_matches_the_transformers_tokenizer(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    texts = ["the movie was good", "a very very very long and boring and dull and flat plot"]
    pairs = [("good film", "bad plot"), ("fun", "the cast is lovely")]
    reference = AutoTokenizer.from_pretrained(tiny_model_dir)
    for inputs in (texts, pairs):
        ours = encode_texts(tiny_model_dir, inputs, SEQ)
        args = (list(inputs),) if isinstance(inputs[0], str) else (
            [p[0] for p in inputs], [p[1] for p in inputs])
        theirs = reference(*args, padding="max_length", truncation=True, max_length=SEQ,
                           return_tensors="np")
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert ours[name].dtype == np.int64 and ours[name].shape == (2, SEQ)
            np.testing.assert_array_equal(ours[name], theirs[name])
    assert encode_texts(tiny_model_dir, pairs, SEQ)["token_type_ids"].max() == 1


def test_make_batches_cycle_real_rows_and_wrap() -> None:
    encoded = {"input_ids": np.arange(5, dtype=np.int64)[:, None].repeat(3, axis=1)}
    batches = make_batches(encoded, 2)
    assert [b["input_ids"][:, 0].tolist() for b in batches] == [[0, 1], [2, 3], [4, 0]]
    assert make_batches(encoded, 8)[0]["input_ids"][:, 0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert len(make_batches(encoded, 1, limit=2)) == 2


# --- folders and runtimes ---------------------------------------------------------------------


def test_missing_files_and_runtime_guess(tiny_model_dir: Path, onnx_dir: Path,
                                         tmp_path: Path) -> None:
    assert missing_files("pytorch", tiny_model_dir) is None
    assert missing_files("onnxruntime", onnx_dir) is None
    assert "does not exist" in missing_files("onnxruntime", tmp_path / "nowhere")
    assert "lacks model.onnx" in missing_files("onnxruntime", tiny_model_dir)
    assert (guess_runtime(onnx_dir), guess_runtime(tiny_model_dir)) == ("onnxruntime", "pytorch")
    with pytest.raises(KdedgeError, match=r"known: onnxruntime, onnxruntime-cuda, "
                                          r"onnxruntime-generate, onnxruntime-tensorrt, pytorch, "
                                          r"pytorch-cuda, pytorch-generate, pytorch-generate-cuda"):
        missing_files("tensorrt", onnx_dir)
    assert (runtime_for("onnxruntime", "cpu", generation=True),
            runtime_for("pytorch", "cuda", generation=True),
            runtime_for("onnxruntime", "tensorrt", generation=True)) == (
        "onnxruntime-generate", "pytorch-generate-cuda", None)
    assert (runtime_for("onnxruntime", "tensorrt"), runtime_for("pytorch", "tensorrt"),
            runtime_for("pytorch", "cpu")) == ("onnxruntime-tensorrt", None, "pytorch")


def test_io_binding_gives_the_plain_run_outputs(onnx_dir: Path, texts: list[str]) -> None:
    """The GPU targets' IO-binding path, exercised on the CPU device, matches session.run."""
    from kdedge.runtime import ort_feed, ort_session

    session = ort_session(onnx_dir, 1)
    batch = make_batches(encode_texts(onnx_dir, texts, SEQ), 4)[0]
    prepare, run = bound_runner(session, "cpu")
    bound = run(prepare(batch)).copy_outputs_to_cpu()[0]
    plain = session.run(None, ort_feed(session, batch))[0]
    assert bound.shape == (4, 2)
    np.testing.assert_array_equal(bound, plain)


def test_absent_gpu_targets_give_reasons_not_crashes(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    reason = RUNTIMES.get("onnxruntime-cuda").unavailable()
    assert reason == ("this onnxruntime build has no CUDAExecutionProvider (it has "
                      "CPUExecutionProvider; install onnxruntime-gpu on a machine with a GPU)")
    assert "TensorrtExecutionProvider" in RUNTIMES.get("onnxruntime-tensorrt").unavailable()
    assert RUNTIMES.get("onnxruntime").unavailable() is None


def test_default_targets_are_this_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime
    import torch

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert split_targets(None) == (["cpu"], {})  # nothing asked: nothing reported missing
    present, absent = split_targets(["cpu", "tensorrt"])
    assert present == ["cpu"] and list(absent) == ["tensorrt"]
    assert absent["tensorrt"].startswith("this onnxruntime build has no TensorrtExecutionProvider")
    assert target_unavailable("cuda") == (
        f"torch {torch.__version__} sees no CUDA device; this onnxruntime build has no "
        "CUDAExecutionProvider (it has CPUExecutionProvider; install onnxruntime-gpu on a "
        "machine with a GPU)")
    # one GPU runtime that works makes the target present; the others are skipped per model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert split_targets(None) == (["cpu", "cuda"], {})


def test_onnx_parameters_count_initializer_elements(onnx_dir: Path) -> None:
    import onnx

    graph = onnx.load(str(onnx_dir / "model.onnx")).graph
    expected = sum(int(np.prod(init.dims)) for init in graph.initializer)
    assert onnx_parameters(onnx_dir / "model.onnx") == expected > 0


# --- one model in a spawned process -----------------------------------------------------------


def test_bench_model_on_onnx_in_a_child(onnx_dir: Path, texts: list[str]) -> None:
    steps: list[tuple[str, int]] = []
    started = time.perf_counter()
    result = bench_model("student-onnx", "onnxruntime", onnx_dir, texts, [1, 3], [SEQ, 8],
                         threads=[1, 2], warmup_runs=1, min_runs=3, min_duration_s=0.2,
                         on_step=lambda name, size: steps.append((name, size)))
    elapsed = time.perf_counter() - started
    # one process per thread count, each over lengths x batch sizes
    assert steps == [("student-onnx", 1), ("student-onnx", 3)] * 4
    grid = [(p["threads"], p["sequence_length"], p["batch_size"]) for p in result["latency"]]
    assert grid == [(t, s, b) for t in (1, 2) for s in (SEQ, 8) for b in (1, 3)]
    assert result["runtime"] == "onnxruntime"
    assert result["size_bytes"] == folder_bytes(onnx_dir)
    assert result["parameters"] == onnx_parameters(onnx_dir / "model.onnx")
    assert result["runtime_info"]["intra_op_threads"] == 1  # the budget really reached the session
    assert result["runtime_info"]["providers"] == ["CPUExecutionProvider"]
    assert result["memory"]["threads"] == 1 and result["memory"]["device_peak_bytes"] is None
    assert set(latency_at(result, threads=2)) == {"1", "3"}
    for size in (1, 3):
        row = latency_at(result)[str(size)]
        assert set(row) == POINT_KEYS and row["batch_size"] == size and row["sequence_length"] == SEQ
        # a sub-ms model timed for 0.2 s runs far more than min_runs: the duration floor holds
        assert row["runs"] > 3 and len(row["timings_ms"]) == row["runs"]
        assert sum(row["timings_ms"]) / 1000 >= 0.1
        assert sum(row["timings_ms"]) / 1000 < elapsed
    memory = result["memory"]
    assert memory["baseline_rss_bytes"] > 0
    assert memory["load_peak_rss_bytes"] >= memory["baseline_rss_bytes"]
    assert memory["inference_peak_rss_bytes"] >= memory["baseline_rss_bytes"]


def test_bench_model_refuses_a_missing_folder(tmp_path: Path, onnx_dir: Path,
                                              texts: list[str]) -> None:
    with pytest.raises(KdedgeError, match="does not exist"):
        bench_model("x", "onnxruntime", tmp_path / "gone", texts, [1], [SEQ], [1], **TINY)
    with pytest.raises(KdedgeError, match=r"thread counts must be at least 1, got \[\]"):
        bench_model("x", "onnxruntime", onnx_dir, texts, [1], [SEQ], [], **TINY)


# Targets for the isolation tests: module-level so the spawned child can import them.


def _exits_hard(payload: Any, reporter: Reporter) -> None:
    reporter.phase("load")
    os._exit(payload)


def _sleeps(payload: Any, reporter: Reporter) -> None:
    time.sleep(payload)


def _raises(payload: Any, reporter: Reporter) -> None:
    raise ValueError(f"broken {payload}\nsecond line is the reason")


_HOARD: list[bytes] = []


def _leaks(payload: Any, reporter: Reporter) -> int:
    """A model that never frees what it allocates during inference."""
    reporter.phase("load")
    reporter.phase("inference")
    _HOARD.append(b"x" * payload)  # written, so every page is resident
    return len(_HOARD)


def _frugal(payload: Any, reporter: Reporter) -> int:
    reporter.phase("load")
    reporter.phase("inference")
    _HOARD.append(b"x" * payload)
    return len(_HOARD)


def test_a_leaking_model_does_not_raise_the_next_models_peak() -> None:
    leak = 300 * 2**20
    leaky = run_watched(f"{__name__}:_leaks", leak, timeout_s=120)
    frugal = run_watched(f"{__name__}:_frugal", 2**20, timeout_s=120)
    assert leaky.result == 1 and frugal.result == 1  # fresh processes: nothing carried over
    assert leaky.peak_rss["inference"] - leaky.boundary_rss["inference"] >= 0.9 * leak
    assert frugal.peak_rss["inference"] - frugal.boundary_rss["inference"] < 50 * 2**20
    assert frugal.peak_rss["inference"] < leaky.peak_rss["inference"] - 0.9 * leak + 50 * 2**20


def test_child_crash_timeout_and_error_become_reasons() -> None:
    with pytest.raises(ChildFailed, match=r"exited with code 3 during 'load'"):
        run_watched(f"{__name__}:_exits_hard", 3, timeout_s=60)
    with pytest.raises(ChildFailed, match=r"timed out after 1 s during 'startup'"):
        run_watched(f"{__name__}:_sleeps", 30, timeout_s=1)
    with pytest.raises(ChildFailed, match=r"ValueError: second line is the reason"):
        run_watched(f"{__name__}:_raises", 1, timeout_s=60)


# --- the stage --------------------------------------------------------------------------------


def _write_data_stage(folder: Path, texts: list[str]) -> None:
    import pandas as pd

    from kdedge.artifacts import write_json

    folder.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        table = pd.DataFrame({"text": texts, "label": [i % 2 for i in range(len(texts))]})
        table.to_parquet(folder / f"{split}.parquet", index=False)
    write_json(folder / "labels.json", {"labels": ["neg", "pos"], "text_columns": ["text"]})


GPU_ENTRIES = {"teacher-pytorch@cuda", "teacher-onnx@cuda", "student-onnx@cuda",
               "student-fp16@cuda"}


def _context(run_dir: Path, bench: dict[str, Any]) -> StageContext:
    cfg = KdedgeConfig.model_validate({"data": {"max_length": SEQ}, "bench": bench})
    work = run_dir / ".06_bench.partial"
    work.mkdir(parents=True, exist_ok=True)
    return StageContext(cfg, run_dir, work, "fp", {})


@pytest.fixture(scope="module")
def stage_run(tiny_model_dir: Path, onnx_dir: Path, texts: list[str],
              tmp_path_factory: pytest.TempPathFactory) -> tuple[StageContext, dict[str, Any]]:
    """teacher-pytorch and student-onnx present, teacher-onnx absent, student-int8 corrupt."""
    run_dir = tmp_path_factory.mktemp("run")
    _write_data_stage(run_dir / stage_dirname("data"), texts)
    shutil.copytree(tiny_model_dir, run_dir / stage_dirname("teacher") / "model")
    shutil.copytree(onnx_dir, run_dir / stage_dirname("export") / "student")
    broken = run_dir / stage_dirname("quantize") / "student-int8"
    shutil.copytree(onnx_dir, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    ctx = _context(run_dir, {"batch_sizes": [1, 2], "threads": 1, "targets": ["cpu", "cuda"],
                             **TINY})
    return ctx, bench_stage.run(ctx)


def test_stage_measures_present_models_with_one_protocol(
        stage_run: tuple[StageContext, dict[str, Any]], tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    _, metrics = stage_run
    assert metrics["threads"] == [1] and metrics["sequence_lengths"] == [SEQ]
    assert metrics["sequence_length_basis"] == ("95% of the validation and test texts fit; "
                                                f"data.max_length {SEQ}")
    assert metrics["batch_sizes"] == [1, 2]
    assert metrics["targets"] + list(metrics["skipped_targets"]) == ["cpu", "cuda"]
    assert metrics["protocol"] | TINY == metrics["protocol"]
    assert metrics["protocol"]["timer"].startswith("perf_counter")
    assert metrics["protocol"]["process_isolation"].startswith("spawn")
    assert metrics["protocol"]["ort_arena"] == "default"
    assert set(metrics["models"]) - GPU_ENTRIES == {"teacher-pytorch", "student-onnx"}

    teacher = metrics["models"]["teacher-pytorch"]
    assert teacher["runtime"] == "pytorch" and teacher["path"] == "02_teacher/model"
    assert teacher["size_bytes"] == folder_bytes(tiny_model_dir)
    reference = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    assert teacher["parameters"] == sum(p.numel() for p in reference.parameters())
    assert teacher["runtime_info"]["intra_op_threads"] == 1

    student = metrics["models"]["student-onnx"]
    assert student["runtime"] == "onnxruntime" and student["path"] == "04_export/student"
    for row in (teacher, student):
        assert set(row["memory"]) >= MEMORY_KEYS
        assert row["memory"]["baseline_rss_bytes"] > 0
        assert row["memory"]["load_peak_rss_bytes"] >= row["memory"]["baseline_rss_bytes"]
        assert row["memory"]["inference_peak_rss_bytes"] > 0
        assert row["target"] == "cpu"
        assert [(p["threads"], p["batch_size"]) for p in row["latency"]] == [(1, 1), (1, 2)]
        for size, stats in latency_at(row).items():
            assert set(stats) == POINT_KEYS - {"timings_ms"}  # raw timings stay in results.json
            assert stats["batch_size"] == int(size) and stats["runs"] >= 3
            assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
            assert stats["p99_ms"] <= stats["max_ms"]
    # torch weights in the PyTorch teacher, and much less resident memory for the ONNX student
    assert student["memory"]["baseline_rss_bytes"] < teacher["memory"]["baseline_rss_bytes"]


def test_stage_skips_missing_and_broken_models_with_reasons(
        stage_run: tuple[StageContext, dict[str, Any]]) -> None:
    import onnxruntime
    import torch

    _, metrics = stage_run
    assert set(metrics["skipped"]) - GPU_ENTRIES == {"teacher-onnx", "student-int8"}
    assert "04_export/teacher does not exist" in metrics["skipped"]["teacher-onnx"]
    assert "onnxruntime cannot load" in metrics["skipped"]["student-int8"]
    no_ort_gpu = "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
    if no_ort_gpu and not torch.cuda.is_available():  # cuda asked, absent: one line, no entries
        assert metrics["targets"] == ["cpu"]
        assert metrics["skipped_targets"] == {"cuda": (
            f"torch {torch.__version__} sees no CUDA device; this onnxruntime build has no "
            f"CUDAExecutionProvider (it has {', '.join(onnxruntime.get_available_providers())}; "
            "install onnxruntime-gpu on a machine with a GPU)")}
        assert not set(metrics["skipped"]) & GPU_ENTRIES and not set(metrics["models"]) & GPU_ENTRIES
    else:  # every model worth timing on a GPU is planned for cuda: int8 is not, fp16 is
        assert set(metrics["skipped"]) | set(metrics["models"]) >= GPU_ENTRIES


def test_stage_results_file_holds_raw_timings(
        stage_run: tuple[StageContext, dict[str, Any]]) -> None:
    ctx, metrics = stage_run
    results = read_json(ctx.work / bench_stage.RESULTS_FILE)
    assert without_timings(results) == metrics
    for row in results["models"].values():
        for stats in row["latency"]:
            assert len(stats["timings_ms"]) == stats["runs"]
            assert min(stats["timings_ms"]) == stats["min_ms"]


def test_unknown_model_name_lists_known_ones(tmp_path: Path) -> None:
    ctx = _context(tmp_path, {"models": ["teacher-onnx", "student-bf16"]})
    with pytest.raises(KdedgeError, match="student-bf16") as err:
        bench_stage.run(ctx)
    for known in ("student-fp16", "student-int8", "student-onnx", "student-pytorch",
                  "teacher-onnx", "teacher-pytorch"):
        assert known in str(err.value)


def test_a_generation_model_reports_tokens_per_second_and_first_token_time(
        tiny_model_dir: Path, texts: list[str], tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from kdedge.bench.runners import NEW_TOKENS

    folder = tmp_path / "tiny-gpt2"
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=SEQ + NEW_TOKENS, n_embd=16,
                        n_layer=1, n_head=2, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    shutil.copy(tiny_model_dir / "tokenizer.json", folder / "tokenizer.json")
    result = bench_model("tiny-gpt2", "pytorch-generate", folder, texts, [2], [SEQ], [1],
                         warmup_runs=1, min_runs=3, min_duration_s=0)
    (point,) = result["latency"]
    assert point["new_tokens"] == NEW_TOKENS and point["runs"] == 3
    assert point["tokens_per_s"] == pytest.approx(2 * NEW_TOKENS * 1000 / point["mean_ms"],
                                                  rel=1e-3)
    first = point["time_to_first_token"]
    assert first["runs"] == 3 and len(first["timings_ms"]) == 3
    assert 0 < first["p50_ms"] < point["p50_ms"]  # one token is quicker than 32
    assert result["runtime_info"]["generation"] == f"greedy, {NEW_TOKENS} new tokens per row"
    assert result["runtime_info"]["encoder_decoder"] is False
