"""Encoder-decoder models through the one training loop: batches, ImitKD contexts, scoring.

The loop (`trainer.train`) stays the same for generation; this module gives it what differs:

- `TargetSplit`: sources with their target token ids (gold, or the teacher's beam outputs).
- `collate`: a teacher-forced batch: encoder inputs, decoder contexts (start token + targets),
  next-token `labels` and the `mask` of counted positions (generation.position_mask).
- `ImitationContexts`: ImitKD's step hook: per sequence, the data context with probability
  beta (its schedule over optimiser steps), else the student's own rollout.
- `rouge_score_of`: the validation score the loop keeps the best epoch by (ROUGE-L F1).
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
from kdedge.distill.outputs import Outputs
from kdedge.distill.trainer import TrainResult, train
from kdedge.evaluate import generate_texts, generation_metrics

log = logging.getLogger("kdedge")


@dataclass(frozen=True)
class TargetSplit:
    """Training rows for a generator: source texts and target ids (ending with EOS)."""

    texts: list[str]
    targets: list[list[int]]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Specials:
    """The token ids decoding needs: where it starts, what pads, what ends a sequence."""

    start: int
    pad: int
    eos: int

    @classmethod
    def of(cls, model: Any) -> Specials:
        config = model.config
        start = config.decoder_start_token_id
        if start is None:
            start = model.generation_config.decoder_start_token_id
        return cls(int(start), int(config.pad_token_id), int(config.eos_token_id))


def target_ids(tokenizer: Any, texts: Sequence[str], max_length: int, specials: Specials,
               ) -> list[list[int]]:
    """Target token ids as the decoder predicts them: without a leading start token (BERT's
    [CLS] is bert2bert's start), ending with EOS (kept by truncation)."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return [ids[1:] if ids and ids[0] == specials.start else ids for ids in encoded]


def sequences_as_targets(sequences: Sequence[Sequence[int]], specials: Specials,
                         ) -> list[list[int]]:
    """generate() outputs (start token first) as targets: the start token dropped."""
    return [list(s[1:]) if s and s[0] == specials.start else list(s) for s in sequences]


def collate(tokenizer: Any, split: TargetSplit, rows: Sequence[int], max_length: int,
            specials: Specials) -> dict[str, Any]:
    """A teacher-forced batch over `rows`; keys other than the model's are dropped by the loop."""
    enc = tokenizer([split.texts[i] for i in rows], truncation=True, max_length=max_length,
                    padding=True, return_tensors="pt")
    width = max(len(split.targets[i]) for i in rows)
    labels = torch.full((len(rows), width), generation.IGNORE, dtype=torch.long)
    for row, i in enumerate(rows):
        labels[row, :len(split.targets[i])] = torch.tensor(split.targets[i], dtype=torch.long)
    context = generation.shift_right(labels, specials.start, specials.pad)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "decoder_input_ids": context, "labels": labels,
            "mask": generation.position_mask(context, specials.pad, specials.eos),
            "rollout": torch.zeros(len(rows), dtype=torch.bool), "index": torch.as_tensor(rows)}


class ImitationContexts:
    """ImitKD's per-step hook: replaces rows' contexts by the student's rollouts.

    Row i is rolled out with probability 1 - beta(step); `shares` records (beta, rolled-out
    share) per step, so the history shows the mix following the schedule.
    """

    def __init__(self, cfg: GenerationDistillConfig, specials: Specials, max_new_tokens: int,
                 seed: int) -> None:
        self.cfg, self.specials, self.max_new_tokens = cfg, specials, max_new_tokens
        self.generator = torch.Generator().manual_seed(seed)
        self.shares: list[tuple[float, float]] = []

    def beta(self, step: int, total_steps: int) -> float:
        return generation.mix_probability(self.cfg.schedule, step, total_steps,
                                          base=self.cfg.schedule_base, value=self.cfg.beta)

    def __call__(self, model: Any, batch: dict[str, Any], step: int, total_steps: int,
                 ) -> dict[str, Any]:
        beta = self.beta(step, total_steps)
        rows = generation.rollout_rows(len(batch["input_ids"]), beta, self.generator)
        self.shares.append((beta, float(rows.float().mean())))
        if not rows.any():
            return batch
        s = self.specials
        rolled = generation.rollout(model, batch["input_ids"][rows], batch["attention_mask"][rows],
                                    s.start, s.pad, s.eos, sample=self.cfg.rollout == "sample",
                                    top_k=self.cfg.rollout_top_k,
                                    max_new_tokens=self.max_new_tokens)
        context, labels = generation.mix_contexts(batch["decoder_input_ids"], batch["labels"],
                                                  rows, rolled, s.pad)
        return {**batch, "decoder_input_ids": context, "labels": labels, "rollout": rows,
                "mask": generation.position_mask(context, s.pad, s.eos)}

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
            out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          decoder_input_ids=batch["decoder_input_ids"])
        return Outputs(out.logits)
    return run


def score(model: Any, tokenizer: Any, task: TaskData, split: str, max_length: int,
          max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """BLEU / ROUGE of greedy generations against the split's targets."""
    data = task.splits[split]
    predictions = generate_texts(model, tokenizer, data.texts, max_length, max_new_tokens,
                                 batch_size)
    return generation_metrics(predictions, [str(t) for t in data.labels])


def fit(model: Any, tokenizer: Any, task: TaskData, split: TargetSplit, loss_fn: WeightedSum,
        teacher: Callable[[dict[str, Any]], Outputs | None], cfg: TrainingConfig,
        max_length: int, max_new_tokens: int, seed: int, description: str, *,
        contexts: ImitationContexts | None = None, checkpoints: Path | None = None,
        config_key: str = "distill.training") -> TrainResult:
    """Train a generator with the one loop, keeping the epoch with the best validation ROUGE-L."""
    specials = Specials.of(model)

    def evaluate(m: Any) -> float:
        return float(score(m, tokenizer, task, "validation", max_length, max_new_tokens,
                           cfg.eval_batch_size)["rougeL"])

    result = train(model, tokenizer, split, loss_fn, teacher=teacher, evaluate=evaluate, cfg=cfg,
                   max_length=max_length, seed=seed, description=description,
                   checkpoints=checkpoints, config_key=config_key,
                   collate=lambda rows: collate(tokenizer, split, rows, max_length, specials),
                   prepare=contexts, epoch_summary=None if contexts is None else contexts.summary)
    return result
