"""Distillation on two CPU processes (`--launcher accelerate`, gloo) against one process.

A tiny random BERT without dropout, so the only difference between the runs is how the
gradients are summed: two shards averaged by DDP instead of one batch. Each run is a real
`python -m kdedge_cli distill` (with `accelerate launch` underneath for two processes), with
its own empty cache, on copies of one data + teacher run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import toy_rows, write_tiny_encoder

from kdedge import pipeline
from kdedge.artifacts import Manifest
from kdedge.config import load_config

# Two processes sum each step's gradient in another order than one: the students agree to
# float32 rounding carried through the Adam steps, not bit for bit.
WEIGHT_TOLERANCE = 1e-4  # largest |difference| of any student weight
LOSS_TOLERANCE = 1e-5  # of the mean training loss of an epoch
EPOCHS = 6
STUDENT = Path(pipeline.stage_dirname("distill")) / "student" / "model.safetensors"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with its data and teacher stages done (no dropout anywhere)."""
    import pandas as pd

    root = tmp_path_factory.mktemp("distributed")
    pd.DataFrame(toy_rows(170)).to_csv(root / "toy.csv", index=False)
    encoder = write_tiny_encoder(root / "encoder")
    config = json.loads((encoder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (encoder / "config.json").write_text(json.dumps(config))
    (root / "tiny.yaml").write_text(yaml.safe_dump({
        "data": {"source": str(root / "toy.csv"), "text_columns": ["sentence"],
                 "label_column": "sentiment", "max_length": 32},
        "teacher": {"model": str(encoder),
                    "training": {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16}},
        # batches of 12 do not divide the training rows: the last batch is smaller
        "distill": {"student": "2",
                    "training": {"epochs": EPOCHS, "learning_rate": 3e-3, "batch_size": 12}},
        "run": {"threads": 1, "seed": 7},
    }))
    cfg = load_config(root / "tiny.yaml")
    run = root / "base"
    pipeline.prepare_run(cfg, run, resume=False, force=False)
    pipeline.run(cfg, run, only=("data", "teacher"))
    return run


def copy_of(base: Path, name: str, **training: object) -> Path:
    run = base.parent / name
    shutil.copytree(base, run)
    if training:  # a stage command reads the run's own config
        path = run / pipeline.RESOLVED_CONFIG
        config = yaml.safe_load(path.read_text())
        config["distill"]["training"].update(training)
        path.write_text(yaml.safe_dump(config))
    return run


def start(run: Path, *launcher: str) -> subprocess.Popen[str]:
    """`kdedge distill RUN` with its own cache and temporary folder."""
    env = {**os.environ, "KDEDGE_CACHE": str(run.parent / f"{run.name}-cache"),
           "TMPDIR": str(_scratch(run))}
    return subprocess.Popen([sys.executable, "-m", "kdedge_cli", "distill", str(run), *launcher],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def distill(run: Path, *launcher: str) -> Path:
    process = start(run, *launcher)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-3000:]
    (run.parent / f"{run.name}.log").write_text(out)
    return run


def _scratch(run: Path) -> Path:
    folder = run.parent / f"{run.name}-tmp"
    folder.mkdir(exist_ok=True)
    return folder


def weights(run: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(run / STUDENT)


def max_difference(a: Path, b: Path) -> float:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    return max(float((first[k] - second[k]).abs().max()) for k in first)


def metrics(run: Path) -> dict[str, object]:
    return Manifest.load(run / pipeline.stage_dirname("distill")).metrics


TWO = ("--launcher", "accelerate", "--num-processes", "2")


def test_two_processes_train_the_student_one_process_trains(base: Path) -> None:
    one, two = distill(copy_of(base, "one")), distill(copy_of(base, "two"), *TWO)
    assert max_difference(one, two) < WEIGHT_TOLERANCE
    history = {run: metrics(run)["history"] for run in (one, two)}
    for single, double in zip(history[one], history[two], strict=True):
        assert abs(single["train_loss"] - double["train_loss"]) < LOSS_TOLERANCE
        assert single["validation_score"] == pytest.approx(double["validation_score"], abs=1e-6)
    assert metrics(one)["processes"] == {"world_size": 1, "backend": None, "device": "cpu"}
    assert metrics(two)["processes"]["world_size"] == 2
    assert metrics(two)["processes"]["backend"] == "gloo"

    # one copy of everything: one student, no partial or scratch folders, the teacher outputs
    # in one shard per process covering every row once
    assert [p.relative_to(two) for p in two.rglob("model.safetensors")] == \
        [Path(pipeline.stage_dirname("teacher")) / "model" / "model.safetensors", STUDENT]
    assert not list(two.glob(".*")) and not list(_scratch(two).glob("kdedge-*"))
    rows = metrics(two)["training_examples"]
    assert rows % 12 != 0  # the last batch is not a full one: its shards differ in size
    shards = sorted(p.name for p in (two.parent / "two-cache").glob("teacher-outputs/*/*"))
    half = -(-rows // 2)
    assert shards == [f"rows-{0:09d}-{half:09d}.safetensors",
                      f"rows-{half:09d}-{rows:09d}.safetensors"]


def test_gradient_accumulation_takes_the_same_steps(base: Path) -> None:
    """Each process's share of a batch in 3 passes: the same optimizer steps as in 1."""
    whole = distill(copy_of(base, "whole-batches"), *TWO)
    passes = distill(copy_of(base, "three-passes", gradient_accumulation_steps=3), *TWO)
    assert max_difference(whole, passes) < WEIGHT_TOLERANCE


def test_a_two_process_run_killed_mid_epoch_resumes_on_one_process(base: Path) -> None:
    straight = distill(copy_of(base, "uninterrupted"))
    run = copy_of(base, "killed")
    process = start(run, *TWO)
    deadline = time.monotonic() + 300
    while not list((run / pipeline.CHECKPOINTS).glob("distill-*/1-kd/epoch-2")):
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.005)
    launcher = psutil.Process(process.pid)
    every = [*launcher.children(recursive=True), launcher]  # torchrun starts each worker in a
    for one in every:  # session of its own: SIGKILL each of them, in epoch 3
        one.kill()
    psutil.wait_procs(every, timeout=60)
    process.wait(timeout=60)
    assert not (run / pipeline.stage_dirname("distill")).exists()

    distill(run)
    log = re.sub(r"\s+", " ", (run.parent / "killed.log").read_text())
    after = re.search(r"student \(kd\): continuing after epoch (\d) from its checkpoint", log)
    assert after and 2 <= int(after.group(1)) < EPOCHS, log[-3000:]
    assert [row["epoch"] for row in metrics(run)["history"]] == list(range(1, EPOCHS + 1))
    assert metrics(run)["processes"]["world_size"] == 1
    assert max_difference(run, straight) < WEIGHT_TOLERANCE


def test_an_error_in_a_launched_run_is_one_line_without_the_launcher_s_traceback(
        base: Path) -> None:
    run = copy_of(base, "fp16-on-cpu", mixed_precision="fp16")
    process = start(run, *TWO)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 2
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == ["error: distill.training.mixed_precision=fp16 needs a CUDA GPU and this "
                      "process trains on cpu:0; use bf16 (or no) on a CPU."]
    assert out.rstrip().endswith(errors[0]) and "Traceback" not in out, out[-3000:]
    assert not (run / pipeline.stage_dirname("distill")).exists()
