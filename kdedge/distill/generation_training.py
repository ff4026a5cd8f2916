"""Generators through the one training loop: batches, ImitKD contexts, scoring.

The loop (`trainer.train`) stays the same for generation; this module gives it what differs,
written once for encoder-decoder and decoder-only models through their `Layout`:

- `TargetSplit`: sources with their target token ids (gold, or the teacher's beam outputs).
- `collate`: a teacher-forced batch (layouts.Layout.batch) that remembers its sources and
  targets, so a step hook can rebuild it.
- `ImitationContexts`: ImitKD's step hook: per sequence, the data context with probability
  beta (its schedule over optimiser steps), else the student's own rollout. The data context
  is the split's target: gold (ImitKD), or the teacher's beam output (ImitKD*).
- `score`: BLEU / ROUGE of greedy generations; ROUGE-L is what the loop keeps the best epoch by.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdedge.config import GenerationDistillConfig, TrainingConfig
from kdedge.data.dataset import TaskData
from kdedge.distill import generation
from kdedge.distill.losses import WeightedSum
from kdedge.evaluate import generation_metrics
from kdedge.models.layouts import Layout
from kdedge.training.outputs import Outputs
from kdedge.training.trainer import TrainResult, model_inputs, train

log = logging.getLogger("kdedge")


@dataclass(frozen=True)
class TargetSplit:
    """Training rows for a generator: source texts and target ids (ending with EOS)."""

    texts: list[str]
    targets: list[list[int]]
    pseudo: list[bool] | None = None  # lifelong: rows replayed from earlier tasks

    def __len__(self) -> int:
        return len(self.texts)


def collate(layout: Layout, split: TargetSplit, rows: Sequence[int]) -> dict[str, Any]:
    """A teacher-forced batch over `rows`; keys other than the model's are dropped by the loop."""
    sources = [split.texts[i] for i in rows]
    targets = [split.targets[i] for i in rows]
    batch = {**layout.batch(sources, targets), "sources": sources, "targets": targets,
             "index": torch.as_tensor(list(rows))}
    if split.pseudo is not None:
        batch["pseudo"] = torch.tensor([split.pseudo[i] for i in rows], dtype=torch.bool)
    return batch


class ImitationContexts:
    """ImitKD's per-step hook: replaces rows' contexts by the student's rollouts.

    Row i is rolled out with probability 1 - beta(step); `shares` records (beta, rolled-out
    share) per step, so the history shows the mix following the schedule.
    """

    def __init__(self, cfg: GenerationDistillConfig, layout: Layout, max_new_tokens: int,
                 seed: int) -> None:
        self.cfg, self.layout, self.max_new_tokens = cfg, layout, max_new_tokens
        self.generator = torch.Generator().manual_seed(seed)
        self.shares: list[tuple[float, float]] = []

    def beta(self, step: int, total_steps: int) -> float:
        return generation.mix_probability(self.cfg.schedule, step, total_steps,
                                          base=self.cfg.schedule_base, value=self.cfg.beta,
                                          warmup=self.cfg.schedule_warmup)

    def __call__(self, model: Any, batch: dict[str, Any], step: int, total_steps: int,
                 ) -> dict[str, Any]:
        beta = self.beta(step, total_steps)
        rows = generation.rollout_rows(len(batch["sources"]), beta, self.generator)
        self.shares.append((beta, float(rows.float().mean())))
        if not rows.any():
            return batch
        picked = [s for s, r in zip(batch["sources"], rows.tolist(), strict=True) if r]
        rolled = iter(self.layout.continuations(
            model, picked, self.max_new_tokens, sample=self.cfg.rollout == "sample",
            top_k=self.cfg.rollout_top_k))
        targets = [next(rolled) if r else t for t, r in zip(batch["targets"], rows.tolist(),
                                                             strict=True)]
        return {**batch, **self.layout.batch(batch["sources"], targets, rows), "targets": targets}

    def summary(self) -> dict[str, float]:
        """Mean beta and rolled-out share since the last call (one epoch's worth)."""
        if not self.shares:
            return {}
        betas, shares = zip(*self.shares, strict=True)
        self.shares = []
        return {"beta": round(float(np.mean(betas)), 4),
                "rollout_share": round(float(np.mean(shares)), 4)}


def teacher_logits(teacher: Any) -> Callable[[dict[str, Any]], Outputs]:
    """The teacher's per-token logits on the batch's (possibly rolled-out) contexts."""
    def run(batch: dict[str, Any]) -> Outputs:
        with torch.no_grad():
            return Outputs(teacher(**model_inputs(batch)).logits)
    return run


def score(model: Any, layout: Layout, task: TaskData, split: str, max_new_tokens: int,
          batch_size: int = 32) -> dict[str, Any]:
    """BLEU / ROUGE of greedy generations against the split's targets."""
    data = task.splits[split]
    predictions = layout.texts(model, list(data.texts), max_new_tokens, batch_size)
    return generation_metrics(predictions, [str(t) for t in data.labels])


def fit(model: Any, layout: Layout, task: TaskData, split: TargetSplit, loss_fn: WeightedSum,
        teacher: Callable[[dict[str, Any]], Outputs | None], cfg: TrainingConfig,
        max_new_tokens: int, seed: int, description: str, *,
        contexts: ImitationContexts | None = None, checkpoints: Path | None = None,
        config_key: str = "distill.training",
        evaluate: Callable[[Any], float] | None = None,
        batches: Callable[[Sequence[int]], dict[str, Any]] | None = None) -> TrainResult:
    """Train a generator with the one loop, keeping the epoch with the best `evaluate` score
    (by default the task's validation ROUGE-L); `batches` replaces `collate` (row indices to a
    batch)."""
    def validation_rouge(m: Any) -> float:
        return float(score(m, layout, task, "validation", max_new_tokens,
                           cfg.eval_batch_size)["rougeL"])

    return train(model, layout.tokenizer, split, loss_fn, teacher=teacher,
                 evaluate=evaluate or validation_rouge,
                 cfg=cfg, max_length=layout.max_length, seed=seed, description=description,
                 checkpoints=checkpoints, config_key=config_key,
                 collate=batches or (lambda rows: collate(layout, split, rows)), prepare=contexts,
                 epoch_summary=None if contexts is None else contexts.summary)
