"""Fault injection on the real command: a run killed (SIGKILL) in any stage, or stopped with
Ctrl-C, resumes to the same report as an uninterrupted run; a corrupted artifact is caught; a full
disk leaves no partial output. Every run is a `python -m kdedge_cli` process on a tiny random
BERT and a toy CSV, with its own empty cache, so nothing is borrowed from an earlier run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import toy_rows, write_tiny_encoder

from kdedge import pipeline
from kdedge.artifacts import MANIFEST, Manifest
from kdedge.config import load_config
from kdedge.errors import KdedgeError

STAGES = pipeline.STAGE_NAMES
MODEL_STAGES = ("data", "teacher", "distill", "export", "quantize")  # byte-identical outputs
# timings, and choices made from timings
VOLATILE = {"latency", "memory", "recommendation", "pareto", "duration_s", "started_at",
            "finished_at", "seconds", "examples_per_s", "batch1_p50_ms"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A config for a whole run in about ten seconds, and one uninterrupted run of it."""
    import pandas as pd

    root = tmp_path_factory.mktemp("faults")
    pd.DataFrame(toy_rows(160)).to_csv(root / "toy.csv", index=False)
    write_tiny_encoder(root / "encoder")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"source": str(root / "toy.csv"), "text_columns": ["sentence"],
                 "label_column": "sentiment", "max_length": 32},
        "teacher": {"model": str(root / "encoder"),
                    "training": {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16}},
        "distill": {"student": "2", "training": {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16}},
        "bench": {"models": ["student-onnx", "student-int8"], "batch_sizes": [1], "warmup_runs": 0,
                  "min_runs": 1, "min_duration_s": 0, "threads": 1},
        "run": {"threads": 1, "seed": 7},
    }))
    baseline = root / "baseline"
    assert compress(config, baseline).returncode == 0
    return {"root": root, "config": config, "baseline": baseline}


def compress(config: Path, out: Path, *extra: str, kill_after: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(config, out, *extra), env=env(out, kill_after), capture_output=True,
                          text=True, timeout=300)


def command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kdedge_cli", "compress", "--config", str(config), "--out", str(out),
            *extra]


def env(out: Path, kill_after: str | None = None) -> dict[str, str]:
    caches = out.parent / f"{out.name}-caches"
    caches.mkdir(exist_ok=True)
    values = {**os.environ, "KDEDGE_CACHE": str(caches / str(len(list(caches.iterdir()))))}
    values.pop(pipeline.FAULT_ENV, None)
    if kill_after:
        values[pipeline.FAULT_ENV] = kill_after
    return values


def stable(node: Any) -> Any:
    """The report without what legitimately differs between two identical runs: timings."""
    if isinstance(node, dict):
        return {k: stable(v) for k, v in node.items() if k not in VOLATILE and not k.endswith("_ms")}
    if isinstance(node, list):
        return [stable(v) for v in node]
    return node


def report(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / pipeline.stage_dirname("report") / "report.json").read_text())


def outputs(run_dir: Path, stage: str) -> dict[str, str]:
    return {rel: meta["sha256"] for rel, meta in
            Manifest.load(run_dir / pipeline.stage_dirname(stage)).outputs.items()}


def assert_same_result(run_dir: Path, baseline: Path) -> None:
    for stage in MODEL_STAGES:
        assert outputs(run_dir, stage) == outputs(baseline, stage), stage
    assert stable(report(run_dir)) == stable(report(baseline))
    assert not list(run_dir.glob(".*.partial")) and not (run_dir / pipeline.CHECKPOINTS).exists()


def test_a_run_killed_in_every_stage_resumes_to_the_same_report(tiny: dict[str, Path]) -> None:
    """Killed once per stage, right after the stage's work and before it is committed: each time
    the finished stages are kept, the killed one left only a hidden .partial folder, and the
    last --resume ends with the uninterrupted run's artifacts, byte for byte, and report."""
    run = tiny["root"] / "killed"
    for index, stage in enumerate(STAGES):
        resume = ("--resume",) if index else ()
        done = compress(tiny["config"], run, *resume, kill_after=stage)
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        final = run / pipeline.stage_dirname(stage)
        assert not final.exists() and (run / f".{final.name}.partial").is_dir()
        assert all((run / pipeline.stage_dirname(s) / MANIFEST).is_file() for s in STAGES[:index])
    done = compress(tiny["config"], run, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_result(run, tiny["baseline"])


def test_ctrl_c_exits_130_and_resume_finishes_the_run(tiny: dict[str, Path]) -> None:
    run = tiny["root"] / "interrupted"
    # Ctrl-C must reach the run's handler even where pytest itself runs with SIGINT ignored
    # (a shell's background job), which a child would otherwise inherit
    process = subprocess.Popen(command(tiny["config"], run), env=env(run), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    # distill takes seconds; the teacher stage may be a cache hit of milliseconds that a poll misses
    while not (run / f".{pipeline.stage_dirname('distill')}.partial").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.rstrip().endswith("interrupted; finished stages are kept: continue with `kdedge "
                                    "compress --resume --out RUN_DIR`.")
    assert "Traceback" not in stderr
    assert (run / pipeline.stage_dirname("data") / MANIFEST).is_file()
    done = compress(tiny["config"], run, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_result(run, tiny["baseline"])


def test_a_run_killed_in_the_middle_of_distillation_continues_at_the_next_epoch(
        tiny: dict[str, Path]) -> None:
    """SIGKILL as soon as the first distillation epoch is saved; --resume continues from that
    checkpoint (not from scratch) and writes the very student an unbroken run writes. Both runs
    stop after export (KDEDGE_TEST_KILL_AFTER) as only the student matters here."""
    epochs = ("--epochs", "8")
    straight = tiny["root"] / "eight-epochs"
    assert compress(tiny["config"], straight, *epochs, kill_after="export").returncode == -signal.SIGKILL

    run = tiny["root"] / "killed-in-training"
    process = subprocess.Popen(command(tiny["config"], run, *epochs), env=env(run), text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((run / pipeline.CHECKPOINTS).glob("distill-*/1-kd/epoch-*")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.kill()
    process.wait(timeout=60)
    assert not (run / pipeline.stage_dirname("distill")).exists()  # killed inside the stage

    done = compress(tiny["config"], run, *epochs, "--resume", kill_after="export")
    assert done.returncode == -signal.SIGKILL
    log = re.sub(r"\s+", " ", done.stdout + done.stderr)
    resumed_after = re.search(r"student \(kd\): continuing after epoch (\d) from its checkpoint", log)
    assert resumed_after and 1 <= int(resumed_after.group(1)) < 8, log[-3000:]
    assert outputs(run, "distill") == outputs(straight, "distill")
    history = Manifest.load(run / pipeline.stage_dirname("distill")).metrics["history"]
    assert [row["epoch"] for row in history] == list(range(1, 9))


def test_the_same_seed_gives_the_same_student_and_another_seed_does_not(tiny: dict[str, Path]) -> None:
    again = tiny["root"] / "again"
    assert compress(tiny["config"], again).returncode == 0
    assert_same_result(again, tiny["baseline"])
    distill = Manifest.load(again / pipeline.stage_dirname("distill")).metrics
    assert stable(distill) == stable(Manifest.load(
        tiny["baseline"] / pipeline.stage_dirname("distill")).metrics)

    other = tiny["root"] / "other-seed"
    done = compress(tiny["config"], other, "--seed", "8", kill_after="export")
    assert done.returncode == -signal.SIGKILL
    student = "student/model.safetensors"
    assert outputs(other, "distill")[student] != outputs(tiny["baseline"], "distill")[student]


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupted_artifact_is_detected_on_resume_and_its_stage_runs_again(
        tiny: dict[str, Path]) -> None:
    run = tiny["root"] / "corrupted"
    shutil.copytree(tiny["baseline"], run)
    weights = run / pipeline.stage_dirname("distill") / "student" / "model.safetensors"
    corrupt(weights)
    done = compress(tiny["config"], run, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    log = re.sub(r"\s+", " ", done.stdout + done.stderr)
    assert f"[2/{len(STAGES)}] teacher: up to date, skipped" in log
    assert f"[3/{len(STAGES)}] distill: runs again (" in log
    assert "has changed since it was written)" in log
    assert_same_result(run, tiny["baseline"])  # the re-run wrote the very same student again


@pytest.mark.parametrize(("command_name", "stage", "file"), [
    ("export", "distill", "student/model.safetensors"),
    ("quantize", "export", "student/model.onnx"),
])
def test_a_stage_alone_refuses_a_corrupt_input(tiny: dict[str, Path], command_name: str, stage: str,
                                               file: str) -> None:
    run = tiny["root"] / f"corrupt-{stage}"
    shutil.copytree(tiny["baseline"], run)
    path = run / pipeline.stage_dirname(stage) / file
    corrupt(path)
    done = subprocess.run([sys.executable, "-m", "kdedge_cli", command_name, str(run)],
                          env=env(run), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {path} has changed since it was written (its sha256 no longer matches "
        f"{path.parents[len(Path(file).parts) - 1] / MANIFEST}); run `kdedge compress --resume "
        f"--out {run}` to write it again.")


def test_a_full_disk_in_a_stage_leaves_no_partial_output(tiny: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The data stage's parquet write fails half-way with ENOSPC: one sentence naming the file,
    no .partial folder and no stage folder left; once there is space, --resume works."""
    import errno

    import pandas as pd

    run = tmp_path / "full"
    cfg = load_config(tiny["config"], {"run.out": str(run)})
    pipeline.prepare_run(cfg, run, resume=False, force=False)
    real = pd.DataFrame.to_parquet

    def full_disk(self: pd.DataFrame, path: Any, *args: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_disk)
    with pytest.raises(KdedgeError) as info:
        pipeline.run(cfg, run, only=("data",))
    message = str(info.value)
    assert re.fullmatch(r"No space left on the device writing \S+\.01_data\.partial/\w+\.parquet in "
                        rf"stage 'data'; free some space, then run `kdedge compress --resume --out "
                        rf"{re.escape(str(run.resolve()))}`\.", message), message
    assert sorted(p.name for p in run.iterdir()) == ["config.resolved.yaml", "run.json"]

    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    pipeline.run(cfg, run, only=("data",))
    assert outputs(run, "data") == outputs(tiny["baseline"], "data")


@pytest.mark.parametrize(("error", "free_bytes", "disk_full"), [
    (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
     10**9, True),  # safetensors' words
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), 0,
     True),  # torch.save on a full disk says nothing of it; the free space does
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), 10**9,
     False),  # the same words with space left are some other failure: raised as it is
])
def test_a_full_disk_in_any_writer_s_words_is_recognised(error: Exception, free_bytes: int,
                                                          disk_full: bool, tiny: dict[str, Path],
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "full"
    cfg = load_config(tiny["config"], {"run.out": str(run)})
    pipeline.prepare_run(cfg, run, resume=False, force=False)

    def stage_that_fills_the_disk(ctx: pipeline.StageContext) -> dict[str, Any]:
        (ctx.work / "half-written.bin").write_bytes(b"\0" * 100)
        raise error

    usage = shutil.disk_usage(run)
    monkeypatch.setattr(pipeline.Stage, "function", lambda self: stage_that_fills_the_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free_bytes))
    if disk_full:
        with pytest.raises(KdedgeError, match=rf"^No space left on the device writing "
                                              rf"{re.escape(str(run.resolve()))} in stage 'data'; "):
            pipeline.run(cfg, run, only=("data",))
        assert sorted(p.name for p in run.iterdir()) == ["config.resolved.yaml", "run.json"]
    else:
        with pytest.raises(RuntimeError, match="unexpected pos"):
            pipeline.run(cfg, run, only=("data",))
        assert (run / ".01_data.partial" / "half-written.bin").is_file()  # kept to look into
