"""The one training loop. Teacher fine-tuning and every distillation recipe run through it.

What differs between methods is the loss (a WeightedSum of small modules) and where teacher
outputs come from (cached tensors, or none for plain fine-tuning), never the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
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

from kdedge import parallel
from kdedge.config import TrainingConfig
from kdedge.data.dataset import TaskSplit
from kdedge.distill.losses import WeightedSum
from kdedge.errors import KdedgeError
from kdedge.evaluate import encode
from kdedge.progress import advance, progress_bar
from kdedge.training import checkpoint
from kdedge.training.outputs import Feedback, Outputs

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
    paused: bool = False  # stopped at `stop_after`, before the schedule's last epoch


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
    """Every row once, in a fresh random order, cut into batches."""
    def epoch(generator: torch.Generator) -> list[list[int]]:
        order = torch.randperm(size, generator=generator).tolist()
        return [order[i:i + batch_size] for i in range(0, size, batch_size)]
    return epoch


BUCKET_WINDOW = 50  # batches whose rows are sorted by length together


def length_bucketed_batches(lengths: Sequence[int], batch_size: int) -> Sampler:
    """Every row once, in batches of rows of about the same length, so that little of a batch
    is padding (on short real texts a shuffled batch was half padding). A fresh random order is
    cut into windows of BUCKET_WINDOW batches, each window sorted by length and cut into
    batches, and the batches are shuffled: still a random epoch, of cheaper steps."""
    def epoch(generator: torch.Generator) -> list[list[int]]:
        order = torch.randperm(len(lengths), generator=generator).tolist()
        window = batch_size * BUCKET_WINDOW
        batches = []
        for start in range(0, len(order), window):
            rows = sorted(order[start:start + window], key=lengths.__getitem__)
            batches += [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return epoch


def token_lengths(tokenizer: Any, split: TaskSplit, max_length: int) -> list[int]:
    """Each row's token count, capped at max_length (tokenized once, before the first epoch)."""
    encoded = encode(tokenizer, split.texts, max_length, return_tensors=None, padding=False)
    return [len(ids) for ids in encoded["input_ids"]]


def bucketed_epochs(cfg: TrainingConfig, kind_default: bool, own_batches: bool,
                    loss_fn: WeightedSum) -> bool:
    """Whether an epoch's batches group rows of similar lengths: the config's choice, else the
    task kind's; never when the caller batches its own way (generation) or when a teacher
    selector learns from each batch's outcome (it must see batches drawn at random)."""
    asked = kind_default if cfg.length_buckets is None else cfg.length_buckets
    return asked and not own_batches and not loss_fn.wants_feedback


def _flushing_subnormals(fn: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    """Tiny gradients square to subnormal floats in Adam's second moment, and x86 CPUs compute
    on subnormals many times slower: a student initialized from a well-trained teacher spent
    most of each step there. Training flushes them to zero, which changes no result that
    matters, and leaves the process's floating point as it was afterwards."""
    @functools.wraps(fn)
    def flushing(*args: Any, **kwargs: Any) -> TrainResult:
        torch.set_flush_denormal(True)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_flush_denormal(False)
    return flushing


@_flushing_subnormals
def train(model: nn.Module, tokenizer: Any, split: TaskSplit, loss_fn: WeightedSum,
          teacher: TeacherFn, evaluate: Callable[[nn.Module], float], cfg: TrainingConfig,
          max_length: int, seed: int, description: str, *, hidden_states: bool = False,
          keep: str = "best", sampler: Sampler | None = None, checkpoints: Path | None = None,
          config_key: str = "distill.training", collate: Collate | None = None,
          prepare: Prepare | None = None,
          epoch_summary: Callable[[], dict[str, float]] | None = None,
          stop_after: int | None = None, length_buckets: bool = False) -> TrainResult:
    """Train for cfg.epochs, evaluating after each epoch; with cfg.patience, stop early once
    the validation score has not improved for that many epochs (keep="best" only).

    Leaves the model at its best epoch on validation (keep="best"), or at its last one
    (keep="last", for phases whose validation score means nothing yet, e.g. before the head
    is trained). The loss's own parameters (a projection) train with the model.

    With `checkpoints`, every finished epoch is saved there and a call that finds a checkpoint
    continues after its epoch, exactly as if it had not stopped. `config_key` names the
    settings in error messages (distill.training or teacher.training).

    `stop_after` pauses after that epoch of the cfg.epochs schedule (with `checkpoints`, a later
    call continues from there, as successive halving in the student search does); the result
    is then that of the epochs so far, with `paused` set.

    `length_buckets` is the task kind's choice of batches of similar lengths
    (TaskKind.length_buckets), which cfg.length_buckets overrides when it is set.

    Generation passes `collate` (its batches), `prepare` (a per-step change of the batch, given
    the global step and the total) and `epoch_summary` (what that change did, for the history).
    """
    world = parallel.world()
    _check_precision(cfg, world, config_key)
    generator = torch.Generator().manual_seed(seed)
    if sampler is None:
        sampler = (length_bucketed_batches(token_lengths(tokenizer, split, max_length), cfg.batch_size)
                   if bucketed_epochs(cfg, length_buckets, collate is not None, loss_fn)
                   else shuffled_batches(len(split), cfg.batch_size))
    steps_per_epoch = len(sampler(torch.Generator().manual_seed(seed)))
    total_steps = steps_per_epoch * cfg.epochs
    collate = collate or (lambda rows: make_batch(tokenizer, split, rows, max_length))
    model.to(world.device)
    loss_fn.to(world.device)
    optimizer = _optimizer([model, loss_fn], cfg)
    lr_schedule = _linear_schedule(optimizer, cfg.warmup_ratio, total_steps)
    step_fn = _Step(model, loss_fn, teacher, optimizer, lr_schedule, cfg, hidden_states, world)
    result = TrainResult(best_epoch=0, best_score=-math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    first = 1
    resumed = None if checkpoints is None else checkpoint.restore(
        checkpoints, model, loss_fn, optimizer, lr_schedule, generator)
    if resumed is not None:
        first, best_state = resumed.epoch + 1, resumed.best_state
        result = TrainResult(resumed.best_epoch, resumed.best_score, resumed.history)
        log.info("  %s: continuing after epoch %d from its checkpoint", description, resumed.epoch)
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    result.paused = last < cfg.epochs
    for epoch in range(first, last + 1):
        if keep == "best" and cfg.patience and epoch - 1 - result.best_epoch >= cfg.patience:
            log.info("  %s: stopping after epoch %d, its validation score has not improved for %d "
                     "epoch(s); keeping epoch %d (%.4f)", description, epoch - 1, cfg.patience,
                     result.best_epoch, result.best_score)
            break
        model.train()
        schedule_state = loss_fn.begin_epoch(epoch)
        started, total_loss, seen = time.perf_counter(), 0.0, 0
        with progress_bar(f"{description} epoch {epoch}/{cfg.epochs}", steps_per_epoch) as bar:
            for step, rows in enumerate(sampler(generator), start=1):
                position = (epoch - 1) * steps_per_epoch + step - 1, total_steps
                try:
                    loss = step_fn(rows, collate, prepare, position)
                except (torch.OutOfMemoryError, MemoryError):
                    raise KdedgeError(
                        f"Out of memory training the {description} with batch size "
                        f"{cfg.batch_size}; train it in smaller passes with --set {config_key}."
                        f"gradient_accumulation_steps={2 * cfg.gradient_accumulation_steps} "
                        f"(the same steps), or lower {config_key}.batch_size.") from None
                if loss is None:
                    kept = ("" if checkpoints is None or checkpoint.latest(checkpoints) is None
                            else f"; the last good checkpoint is kept in {checkpoint.latest(checkpoints)}")
                    raise KdedgeError(
                        f"The {description} loss is not finite at epoch {epoch}, step {step}; lower "
                        f"{config_key}.learning_rate (now {cfg.learning_rate:g}) and run again{kept}.")
                total_loss += loss * len(rows)
                seen += len(rows)
                advance(bar, 1, f"loss {total_loss / seen:.4f}")
        seconds = time.perf_counter() - started
        # the main process scores the epoch; every process keeps the same best epoch
        score = world.from_main(evaluate(model) if world.is_main else None)
        result.history.append({"epoch": epoch, "train_loss": round(total_loss / seen, 6),
                               "validation_score": round(score, 6),
                               "seconds": round(time.perf_counter() - started, 2),
                               "examples_per_s": round(seen / seconds, 2), **schedule_state,
                               **loss_fn.end_epoch(), **(epoch_summary() if epoch_summary else {})})
        log.info("  %s epoch %d: train loss %.4f, validation score %.4f", description, epoch,
                 total_loss / seen, score)
        if keep == "last" or score > result.best_score:
            result.best_epoch, result.best_score = epoch, score
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if checkpoints is not None and world.is_main:
            checkpoint.save(checkpoints, epoch, model, loss_fn, optimizer, lr_schedule, generator,
                            result.best_epoch, result.best_score, result.history, best_state)
        world.barrier()  # no process runs ahead of the checkpoint it would resume from
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu")  # the stages after training (saving, export, evaluation) run on the CPU
    loss_fn.to("cpu")
    model.eval()
    return result


class _Forward(nn.Module):
    """The model and its loss as one module, so DDP averages the gradients of both (the loss
    can have parameters of its own, e.g. a projection of hidden states)."""

    def __init__(self, model: nn.Module, loss_fn: WeightedSum, hidden_states: bool) -> None:
        super().__init__()
        self.model, self.loss_fn, self.hidden_states = model, loss_fn, hidden_states

    def forward(self, batch: dict[str, Any], teacher: Outputs | None) -> torch.Tensor:
        out = self.model(**model_inputs(batch), output_hidden_states=self.hidden_states)
        loss, _ = self.loss_fn(Outputs.from_hf(out), teacher, batch)
        return loss


class _Step:
    """One optimizer step on a global batch of rows.

    Each process takes its shard of the rows and splits it into gradient_accumulation_steps
    passes; each pass's mean loss is weighted by its share of the global batch, so the summed
    (and, across processes, averaged) gradient is the gradient of the global batch's mean loss,
    whatever the number of processes and passes.
    """

    def __init__(self, model: nn.Module, loss_fn: WeightedSum, teacher: TeacherFn,
                 optimizer: torch.optim.Optimizer, lr_schedule: Any, cfg: TrainingConfig,
                 hidden_states: bool, world: parallel.World) -> None:
        self.model, self.loss_fn, self.teacher = model, loss_fn, teacher
        self.optimizer, self.lr_schedule, self.cfg, self.world = optimizer, lr_schedule, cfg, world
        forward = _Forward(model, loss_fn, hidden_states)
        # Parameters no loss reads (a pooler) get no gradient, which DDP must be told about: a
        # static graph learns them once, but torch's reducer cannot combine it with no_sync,
        # which gradient accumulation needs; there it searches for them every step instead.
        accumulates = cfg.gradient_accumulation_steps > 1
        self.forward = forward if not world.distributed else nn.parallel.DistributedDataParallel(
            forward, static_graph=not accumulates, find_unused_parameters=accumulates)
        self.device_type = torch.device(world.device).type
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
            cfg.mixed_precision)
        self.scaler = (torch.amp.GradScaler(self.device_type) if cfg.mixed_precision == "fp16"
                       else None)

    def __call__(self, rows: Sequence[int], collate: Collate, prepare: Prepare | None,
                 position: tuple[int, int]) -> float | None:
        """The global batch's mean loss, or None (and no update) when it is not finite."""
        mine = self.world.shard(rows)
        # a process with no rows (a last batch smaller than the world) still joins the
        # gradient averaging, with a pass that weighs nothing
        weight = 1.0 if mine else 0.0
        passes = [p for p in np.array_split(np.asarray(mine or rows[:1]),
                                            self.cfg.gradient_accumulation_steps) if len(p)]
        self.optimizer.zero_grad(set_to_none=True)
        local = 0.0
        feedback = self.loss_fn.wants_feedback  # e.g. a teacher selector rewarded by the step
        seen: list[tuple[dict[str, Any], Outputs]] = []  # each pass's batch and outputs before
        for number, part in enumerate(passes, start=1):
            batch = collate(part.tolist())
            if prepare is not None:
                batch = prepare(self.model, batch, *position)
            teacher = _to_device(self.teacher(batch), self.world.device)
            batch = _to_device(batch, self.world.device)
            if feedback:
                seen.append((batch, _outputs_now(self.model, batch)))
            share = weight * len(part) / len(rows)
            sync = number == len(passes) or not self.world.distributed
            with contextlib.nullcontext() if sync else self.forward.no_sync(), \
                    torch.autocast(self.device_type, dtype=self.autocast_dtype,
                                   enabled=self.autocast_dtype is not None):
                loss = self.forward(batch, teacher)
            scaled = loss.float() * share * self.world.size  # DDP divides by the world size
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            local += loss.item() * share
        total = self.world.sum([local])[0]
        if not math.isfinite(total):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.lr_schedule.step()
        if feedback:  # the same rows of every pass, before and after the step, in eval mode
            self.loss_fn.after_step([Feedback(b, before, _outputs_now(self.model, b), bool(mine))
                                     for b, before in seen], self.world.gather)
        return total


def _check_precision(cfg: TrainingConfig, world: parallel.World, config_key: str) -> None:
    if cfg.mixed_precision == "fp16" and not world.device.startswith("cuda"):
        raise KdedgeError(f"{config_key}.mixed_precision=fp16 needs a CUDA GPU and this process "
                          f"trains on {world.device}; use bf16 (or no) on a CPU.")


def _to_device(value: Any, device: str) -> Any:
    """Tensors moved to the training device, through dicts, lists and dataclasses."""
    if device == "cpu" or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device) for v in value)
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value, **{f.name: _to_device(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value)})
    return value


def _outputs_now(model: nn.Module, batch: dict[str, Any]) -> Outputs:
    """The student's outputs on a batch, without dropout or gradients."""
    model.eval()
    with torch.no_grad():
        out = Outputs.from_hf(model(**model_inputs(batch)))
    model.train()
    return out


def _optimizer(modules: list[nn.Module], cfg: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and norms, as in BERT fine-tuning.

    Fused: one kernel over all parameters instead of a loop of elementwise passes per tensor.
    On a CPU the loop spent about as long updating the 11.7M-parameter word embeddings of a
    3-layer MiniLM student as the forward and backward passes took (benchmarks/results/
    real-data.md)."""
    decay, no_decay = [], []
    for module in modules:
        for name, param in module.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup_ratio: float, total_steps: int,
                     ) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
