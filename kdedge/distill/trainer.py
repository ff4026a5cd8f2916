"""The one training loop. Teacher fine-tuning and every distillation recipe run through it.

What differs between methods is the loss (a WeightedSum of small modules) and where teacher
outputs come from (cached tensors, or none for plain fine-tuning), never the loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdedge.config import TrainingConfig
from kdedge.data.dataset import TaskSplit
from kdedge.distill import checkpoint
from kdedge.distill.losses import WeightedSum
from kdedge.distill.outputs import Outputs
from kdedge.errors import KdedgeError
from kdedge.evaluate import encode
from kdedge.progress import advance, progress_bar

log = logging.getLogger("kdedge")

TeacherFn = Callable[[dict[str, Any]], Outputs | None]  # batch -> teacher outputs for it
Sampler = Callable[[torch.Generator], list[list[int]]]  # one epoch's batches of row indices
Collate = Callable[[Sequence[int]], dict[str, Any]]  # row indices -> a batch
Prepare = Callable[[nn.Module, dict[str, Any], int, int], dict[str, Any]]  # (model, batch, step,
# total steps) -> the batch the step trains on, e.g. with the student's own rollouts (ImitKD)
NOT_MODEL_INPUTS = ("labels", "index", "mask", "rollout", "sources", "targets", "prompt_mask",
                    "pseudo")  # batch keys
# the losses and step hooks read


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)


def make_batch(tokenizer: Any, split: TaskSplit, indices: Sequence[int], max_length: int,
               ) -> dict[str, Any]:
    """Tokenize a batch, padded to its longest text; carries row indices for cached outputs."""
    idx = np.asarray(indices)
    batch = dict(encode(tokenizer, [split.texts[i] for i in idx], max_length, "pt"))
    batch["labels"] = torch.as_tensor(split.labels[idx])
    batch["index"] = torch.as_tensor(idx)
    if split.task_ids is not None:  # multi-task: every batch comes from one task
        batch["task"] = int(split.task_ids[idx[0]])
    return batch


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS}


def shuffled_batches(size: int, batch_size: int) -> Sampler:
    """The default epoch: every row once, in a fresh random order, cut into batches."""
    def epoch(generator: torch.Generator) -> list[list[int]]:
        order = torch.randperm(size, generator=generator).tolist()
        return [order[i:i + batch_size] for i in range(0, size, batch_size)]
    return epoch


def train(model: nn.Module, tokenizer: Any, split: TaskSplit, loss_fn: WeightedSum,
          teacher: TeacherFn, evaluate: Callable[[nn.Module], float], cfg: TrainingConfig,
          max_length: int, seed: int, description: str, *, hidden_states: bool = False,
          keep: str = "best", sampler: Sampler | None = None, checkpoints: Path | None = None,
          config_key: str = "distill.training", collate: Collate | None = None,
          prepare: Prepare | None = None,
          epoch_summary: Callable[[], dict[str, float]] | None = None) -> TrainResult:
    """Train for cfg.epochs, evaluating after each epoch.

    Leaves the model at its best epoch on validation (keep="best"), or at its last one
    (keep="last", for phases whose validation score means nothing yet, e.g. before the head
    is trained). The loss's own parameters (a projection) train with the model.

    With `checkpoints`, every finished epoch is saved there and a call that finds a checkpoint
    continues after its epoch, exactly as if it had not stopped. `config_key` names the
    settings in error messages (distill.training or teacher.training).

    Generation passes `collate` (its batches), `prepare` (a per-step change of the batch, given
    the global step and the total) and `epoch_summary` (what that change did, for the history).
    """
    generator = torch.Generator().manual_seed(seed)
    sampler = sampler or shuffled_batches(len(split), cfg.batch_size)
    steps_per_epoch = len(sampler(torch.Generator().manual_seed(seed)))
    total_steps = steps_per_epoch * cfg.epochs
    collate = collate or (lambda rows: make_batch(tokenizer, split, rows, max_length))
    optimizer = _optimizer([model, loss_fn], cfg)
    lr_schedule = _linear_schedule(optimizer, cfg.warmup_ratio, total_steps)
    result = TrainResult(best_epoch=0, best_score=-math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    first = 1
    resumed = None if checkpoints is None else checkpoint.restore(
        checkpoints, model, loss_fn, optimizer, lr_schedule, generator)
    if resumed is not None:
        first, best_state = resumed.epoch + 1, resumed.best_state
        result = TrainResult(resumed.best_epoch, resumed.best_score, resumed.history)
        log.info("  %s: continuing after epoch %d from its checkpoint", description, resumed.epoch)
    for epoch in range(first, cfg.epochs + 1):
        model.train()
        schedule_state = loss_fn.begin_epoch(epoch)
        started, total_loss, seen = time.perf_counter(), 0.0, 0
        with progress_bar(f"{description} epoch {epoch}/{cfg.epochs}", steps_per_epoch) as bar:
            for step, rows in enumerate(sampler(generator), start=1):
                batch = collate(rows)
                if prepare is not None:
                    batch = prepare(model, batch, (epoch - 1) * steps_per_epoch + step - 1,
                                    total_steps)
                try:
                    loss = _step(model, loss_fn, teacher, optimizer, lr_schedule, batch, cfg,
                                 hidden_states)
                except (torch.OutOfMemoryError, MemoryError):
                    raise KdedgeError(
                        f"Out of memory training the {description} with batch size "
                        f"{cfg.batch_size}; lower it, e.g. --set {config_key}.batch_size="
                        f"{max(1, cfg.batch_size // 2)}.") from None
                if loss is None:
                    kept = ("" if checkpoints is None or checkpoint.latest(checkpoints) is None
                            else f"; the last good checkpoint is kept in {checkpoint.latest(checkpoints)}")
                    raise KdedgeError(
                        f"The {description} loss is not finite at epoch {epoch}, step {step}; lower "
                        f"{config_key}.learning_rate (now {cfg.learning_rate:g}) and run again{kept}.")
                total_loss += loss * len(batch["labels"])
                seen += len(batch["labels"])
                advance(bar, 1, f"loss {total_loss / seen:.4f}")
        score = evaluate(model)
        result.history.append({"epoch": epoch, "train_loss": round(total_loss / seen, 6),
                               "validation_score": round(score, 6),
                               "seconds": round(time.perf_counter() - started, 2), **schedule_state,
                               **loss_fn.end_epoch(), **(epoch_summary() if epoch_summary else {})})
        log.info("  %s epoch %d: train loss %.4f, validation score %.4f", description, epoch,
                 total_loss / seen, score)
        if keep == "last" or score > result.best_score:
            result.best_epoch, result.best_score = epoch, score
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if checkpoints is not None:
            checkpoint.save(checkpoints, epoch, model, loss_fn, optimizer, lr_schedule, generator,
                            result.best_epoch, result.best_score, result.history, best_state)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


def _step(model: nn.Module, loss_fn: WeightedSum, teacher: TeacherFn,
          optimizer: torch.optim.Optimizer, lr_schedule: Any, batch: dict[str, Any],
          cfg: TrainingConfig, hidden_states: bool) -> float | None:
    """One optimizer step; returns the batch's loss, or None (and no update) when it is not finite."""
    out = model(**model_inputs(batch), output_hidden_states=hidden_states)
    student = Outputs.from_hf(out)
    loss, _ = loss_fn(student, teacher(batch), batch)
    if not torch.isfinite(loss):
        return None
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    lr_schedule.step()
    if loss_fn.wants_feedback:  # e.g. a teacher selector rewarded by the step's effect
        loss_fn.after_step(_outputs_now(model, batch), batch)
    return loss.item()


def _outputs_now(model: nn.Module, batch: dict[str, Any]) -> Outputs:
    """The student's outputs on a batch, without dropout or gradients."""
    model.eval()
    with torch.no_grad():
        out = Outputs.from_hf(model(**model_inputs(batch)))
    model.train()
    return out


def _optimizer(modules: list[nn.Module], cfg: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and norms, as in BERT fine-tuning."""
    decay, no_decay = [], []
    for module in modules:
        for name, param in module.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate)


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup_ratio: float, total_steps: int,
                     ) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
