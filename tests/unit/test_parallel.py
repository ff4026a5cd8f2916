"""Sharding arithmetic, the launcher's command line and its errors (the two-process runs
themselves are in tests/faults/test_distributed.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import error_line, run_cli

from kdedge import launch, parallel
from kdedge.errors import KdedgeError


def test_every_row_of_a_batch_goes_to_exactly_one_process() -> None:
    rows = list(range(100, 111))  # 11 rows on 3 processes: shards of 4, 4, 3
    shards = [parallel.World(size=3, rank=r).shard(rows) for r in range(3)]
    assert shards == [[100, 103, 106, 109], [101, 104, 107, 110], [102, 105, 108]]
    assert parallel.World(size=4, rank=3).shard([1, 2]) == []  # joins with a pass weighing 0
    blocks = [parallel.World(size=3, rank=r).block(10) for r in range(3)]
    assert blocks == [(0, 4), (4, 8), (8, 10)]
    assert parallel.World(size=4, rank=3).block(3) == (3, 3)


def test_one_process_is_the_main_one_and_needs_no_collectives() -> None:
    world = parallel.world()
    assert world == parallel.World() and world.is_main and not world.distributed
    assert world.sum([1.5, 2]) == [1.5, 2.0] and world.from_main("x") == "x"
    assert world.main_first(lambda: 7) == 7
    assert world.describe() == {"world_size": 1, "backend": None, "device": "cpu"}


def test_the_launcher_reruns_the_command_under_accelerate_without_its_own_options() -> None:
    argv = ["compress", "--launcher", "accelerate", "--num-processes=2", "--out", "runs/x",
            "--accelerate-config", "c.yaml", "--epochs", "3"]
    cmd = launch.command(argv, 2, None)
    assert cmd[:3] == [sys.executable, "-m", "kdedge.launch"]
    assert "--multi_gpu" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[cmd.index("--mixed_precision") + 1] == "no"
    assert cmd[cmd.index("kdedge_cli") + 1:] == ["compress", "--out", "runs/x", "--epochs", "3"]
    with_config = launch.command(["distill", "runs/x"], None, Path("cluster.yaml"))
    assert with_config[3:5] == ["--config_file", "cluster.yaml"]
    assert "--multi_gpu" not in with_config and "--num_processes" not in with_config


@pytest.mark.parametrize(("launcher", "processes", "config", "message"), [
    ("torchrun", 2, None, "--launcher 'torchrun' is not known; use --launcher accelerate."),
    ("accelerate", 0, None, "--num-processes 0 must be at least 1."),
    (None, 2, None, "--num-processes and --accelerate-config go with --launcher accelerate; "
                    "add it, e.g. --launcher accelerate --num-processes 2."),
])
def test_bad_launcher_options_are_one_line(launcher: str | None, processes: int | None,
                                           config: Path | None, message: str) -> None:
    with pytest.raises(KdedgeError, match=f"^{message.replace('(', '.').replace(')', '.')}$"):
        launch.check(launcher, processes, config)


def test_a_missing_accelerate_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "cluster.yaml"
    code, _, err = run_cli(["distill", str(tmp_path), "--launcher", "accelerate",
                            "--accelerate-config", str(missing)], capsys, monkeypatch)
    assert code == 2
    assert error_line(err) == (f"error: Accelerate config {missing} does not exist; write one "
                               "with `accelerate config --config_file PATH` or leave the option "
                               "out.")


def test_fsdp_from_the_accelerate_config_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    parallel.world.cache_clear()
    try:
        with pytest.raises(KdedgeError, match=r"^The Accelerate config asks for FSDP, which "):
            parallel.world()
    finally:
        parallel.world.cache_clear()


def test_fp16_on_a_cpu_is_refused_before_training(tiny_model_dir: Path) -> None:
    import numpy as np
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdedge.config import TrainingConfig
    from kdedge.data.dataset import TaskSplit
    from kdedge.distill import losses
    from kdedge.training.trainer import train

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    split = TaskSplit(texts=["good film"], labels=np.array([1]))
    cfg = TrainingConfig(mixed_precision="fp16")
    with pytest.raises(KdedgeError, match=r"^teacher.training.mixed_precision=fp16 needs a CUDA "
                                          r"GPU and this process trains on cpu; use bf16 \(or no\) "
                                          r"on a CPU\.$"):
        train(model, tokenizer, split, losses.build([("ce", 1.0, {})]), teacher=lambda b: None,
              evaluate=lambda m: 0.0, cfg=cfg, max_length=16, seed=0, description="teacher",
              config_key="teacher.training")


def test_bf16_autocast_trains_on_a_cpu(tiny_model_dir: Path) -> None:
    """bf16 is an option on the CPU too: one epoch runs and moves the weights."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdedge.config import TrainingConfig
    from kdedge.data.dataset import TaskSplit
    from kdedge.distill import losses
    from kdedge.training.trainer import train

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    before = model.classifier.weight.detach().clone()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    split = TaskSplit(texts=["good film", "bad plot", "fun cast", "dull story"],
                      labels=np.array([1, 0, 1, 0]))
    result = train(model, tokenizer, split, losses.build([("ce", 1.0, {})]),
                   teacher=lambda b: None, evaluate=lambda m: 0.5,
                   cfg=TrainingConfig(epochs=1, batch_size=2, mixed_precision="bf16"),
                   max_length=16, seed=0, description="teacher")
    assert np.isfinite(result.history[0]["train_loss"])
    assert not torch.equal(before, model.classifier.weight)
    assert model.classifier.weight.dtype == torch.float32  # autocast keeps fp32 weights
