"""Per-epoch training checkpoints: a resumed loop continues where it stopped and ends exactly where
an uninterrupted one ends; training faults stop with one sentence that says what to change."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import toy_rows

from kdedge.config import TrainingConfig
from kdedge.data.dataset import TaskSplit
from kdedge.distill import losses
from kdedge.errors import KdedgeError
from kdedge.torch_utils import seed_everything
from kdedge.training import checkpoint
from kdedge.training.outputs import Outputs
from kdedge.training.trainer import train

CFG = TrainingConfig(epochs=3, batch_size=16, learning_rate=3e-3, warmup_ratio=0.1)


def toy_split(count: int = 64) -> TaskSplit:
    rows = toy_rows(count, seed=3)
    return TaskSplit([r["sentence"] for r in rows],
                     np.array([int(r["sentiment"] == "pos") for r in rows], dtype=np.int64))


def fresh_model(tiny_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (AutoModelForSequenceClassification.from_pretrained(tiny_model_dir),
            AutoTokenizer.from_pretrained(tiny_model_dir))


def weights_sha(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Scores:
    """A validation score per epoch that changes with the weights; can stop the loop at a call."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls, self.stop_at = 0, stop_at

    def __call__(self, model: torch.nn.Module) -> float:
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt  # as Ctrl-C would, after that epoch's steps
        return float(model.classifier.weight.detach().abs().sum()) % 1.0


def run_train(tiny_model_dir: Path, checkpoints: Path | None, scores: Scores,
              teacher: Any = None, cfg: TrainingConfig = CFG) -> tuple[torch.nn.Module, Any]:
    seed_everything(5)
    model, tokenizer = fresh_model(tiny_model_dir)
    seed_everything(5)  # as the pipeline does at the start of a stage, before the loop
    loss = losses.build([("ce", 0.5, {}), ("kl", 0.5, {"temperature": 2.0})])
    result = train(model, tokenizer, toy_split(), loss, teacher=teacher or teacher_logits,
                   evaluate=scores, cfg=cfg, max_length=32, seed=5, description="student (kd)",
                   checkpoints=checkpoints)
    return model, result


def teacher_logits(batch: dict[str, Any]) -> Outputs:
    gen = torch.Generator().manual_seed(int(batch["index"].sum()))
    return Outputs(logits=torch.randn(len(batch["index"]), 2, generator=gen))


def without_seconds(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "examples_per_s")}
            for row in history]


def test_a_resumed_loop_continues_after_its_last_epoch_and_ends_identical(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    straight, straight_result = run_train(tiny_model_dir, tmp_path / "straight", Scores())

    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        run_train(tiny_model_dir, stopped, Scores(stop_at=2))  # dies in epoch 2's evaluation
    assert checkpoint.latest(stopped) == stopped / "epoch-1"
    assert not list(stopped.glob(".*partial"))

    scores = Scores()
    resumed, resumed_result = run_train(tiny_model_dir, stopped, scores)
    assert scores.calls == 2  # epochs 2 and 3 only: epoch 1 was not trained again
    assert weights_sha(resumed) == weights_sha(straight)
    assert resumed_result.best_epoch == straight_result.best_epoch
    assert without_seconds(resumed_result.history) == without_seconds(straight_result.history)
    assert [row["epoch"] for row in resumed_result.history] == [1, 2, 3]
    assert sorted(p.name for p in stopped.iterdir()) == ["epoch-3"]  # older epochs dropped


def test_a_finished_loop_restores_its_best_epoch_without_training(tiny_model_dir: Path,
                                                                  tmp_path: Path) -> None:
    first, result = run_train(tiny_model_dir, tmp_path / "ckpt", Scores())
    scores = Scores()
    again, again_result = run_train(tiny_model_dir, tmp_path / "ckpt", scores)
    assert scores.calls == 0
    assert weights_sha(again) == weights_sha(first) and again_result.best_epoch == result.best_epoch


def test_the_loop_state_is_read_with_weights_only(tiny_model_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run_train(tiny_model_dir, tmp_path / "ckpt", Scores(), cfg=CFG.model_copy(update={"epochs": 1}))
    seen: list[Any] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    run_train(tiny_model_dir, tmp_path / "ckpt", Scores(), cfg=CFG.model_copy(update={"epochs": 1}))
    assert seen == [True]
    files = sorted(p.name for p in (tmp_path / "ckpt" / "epoch-1").iterdir())
    assert files == ["loop.pt", "model.safetensors", "progress.json"]


def test_an_unreadable_checkpoint_says_how_to_start_over(tiny_model_dir: Path, tmp_path: Path) -> None:
    run_train(tiny_model_dir, tmp_path / "ckpt", Scores(), cfg=CFG.model_copy(update={"epochs": 1}))
    weights = tmp_path / "ckpt" / "epoch-1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(KdedgeError, match=rf"^Training checkpoint {re.escape(str(weights.parent))} "
                                          r"cannot be read \(.*\); delete that folder to train from "
                                          r"the start\.$"):
        run_train(tiny_model_dir, tmp_path / "ckpt", Scores(), cfg=CFG.model_copy(update={"epochs": 2}))


def test_a_non_finite_loss_stops_with_the_epoch_and_step_and_keeps_the_last_checkpoint(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    calls = {"n": 0}

    def poisoned(batch: dict[str, Any]) -> Outputs:
        calls["n"] += 1
        out = teacher_logits(batch)
        return Outputs(logits=out.logits * np.nan) if calls["n"] == 6 else out  # 4 steps an epoch

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KdedgeError) as info:
        run_train(tiny_model_dir, ckpt, Scores(), teacher=poisoned)
    assert str(info.value) == (
        "The student (kd) loss is not finite at epoch 2, step 2; lower "
        "distill.training.learning_rate (now 0.003) and run again; the last good checkpoint is "
        f"kept in {ckpt / 'epoch-1'}.")
    assert checkpoint.latest(ckpt) == ckpt / "epoch-1"


def test_out_of_memory_suggests_a_smaller_batch(tiny_model_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import BertForSequenceClassification

    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(BertForSequenceClassification, "forward", no_memory)
    with pytest.raises(KdedgeError, match=r"^Out of memory training the student \(kd\) with batch "
                                          r"size 16; train it in smaller passes with --set "
                                          r"distill.training.gradient_accumulation_steps=2 \(the "
                                          r"same steps\), or lower distill.training.batch_size\.$"):
        run_train(tiny_model_dir, None, Scores())


def test_the_teacher_selector_state_travels_in_the_loss_state(tmp_path: Path) -> None:
    """The RL selector is no nn.Module parameter; its policy, optimizer, generator and baseline
    still go through the loss's state_dict and a weights_only load."""
    kd = losses.LOSSES.get("multi_teacher_kd")(2, weighting="rl-select", rl={"baseline": "ema"})
    policy = kd.selector._policy(4)
    policy(torch.ones(3, 4)).sum().backward()
    kd.selector.optimizer.step()
    kd.selector.baseline = 0.25
    torch.bernoulli(torch.full((5,), 0.5), generator=kd.selector.generator)
    torch.save(kd.state_dict(), tmp_path / "loss.pt")

    other = losses.LOSSES.get("multi_teacher_kd")(2, weighting="rl-select", rl={"baseline": "ema"})
    other.load_state_dict(torch.load(tmp_path / "loss.pt", weights_only=True))
    assert torch.equal(other.selector.policy.weight, policy.weight)
    assert other.selector.baseline == 0.25
    assert torch.equal(other.selector.generator.get_state(), kd.selector.generator.get_state())
    assert other.selector.optimizer.state_dict()["state"][0]["step"] == 1
