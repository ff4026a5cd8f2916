"""Building blocks of the generation recipes: word-level KD, sequence-level KD and ImitKD.

Pure tensor functions, so each can be checked on fixed numbers (methods-from-papers.md, section
2, ImitKD):

- `position_mask`: the positions a token-level loss counts: those whose decoder *context* token
  is neither padding nor EOS, so the prediction of the final EOS counts and nothing after it.
- `soft_cross_entropy`: word-level KD, -sum_v p_T(v) log p_S(v) per counted position, averaged,
  at temperature 1, optionally with the teacher truncated to its top k logits and renormalised.
- `mix_probability`: ImitKD's beta, the probability that a sequence keeps its data context;
  exponential, linear and reverse-sigmoid schedules over optimiser steps, or a constant.
- `rollout_rows`: per sequence, True (use the student's own rollout) with probability 1 - beta.
- `imitation_targets`: the teacher's argmax on rollout rows, the data's next token elsewhere.

The training loop runs them through generation_training.ImitationContexts (the rollouts) and
the token_ce / word_kd / imitation_ce loss terms (losses.py).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Schedule = Literal["exponential", "linear", "reverse-sigmoid", "constant"]
SCHEDULES: tuple[str, ...] = ("exponential", "linear", "reverse-sigmoid", "constant")
IGNORE = -100  # the label id that cross-entropy skips, as in transformers


def mix_probability(schedule: Schedule, step: int, total_steps: int, *, base: float = 200.0,
                    final: float = 0.0, warmup: float = 0.0, value: float = 1.0,
                    steepness: float = 20.0) -> float:
    """beta at optimiser step `step` of `total_steps`: the chance of keeping the data context.

    exponential: base ** -(t/N), held at 1 for the first `warmup` fraction of training (then
    restarted from there); linear: from 1 down to `final`; reverse-sigmoid:
    1 / (1 + exp(steepness (t/N - 0.5))); constant: `value`.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    progress = min(max(step, 0), total_steps) / total_steps
    if schedule == "exponential":
        if progress < warmup:
            return 1.0
        return float(base ** -(progress - warmup))
    if schedule == "linear":
        return 1.0 - (1.0 - final) * progress
    if schedule == "reverse-sigmoid":
        return 1.0 / (1.0 + math.exp(steepness * (progress - 0.5)))
    if schedule == "constant":
        return float(value)
    raise ValueError(f"unknown mixing schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def rollout_rows(batch_size: int, beta: float, generator: torch.Generator | None = None,
                 ) -> torch.Tensor:
    """[batch] bool: True where the sequence is rolled out by the student (chance 1 - beta)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be within [0, 1], got {beta}")
    draws = torch.rand(batch_size, generator=generator)
    return draws >= beta


def position_mask(context: torch.Tensor, pad_id: int, eos_id: int) -> torch.Tensor:
    """[batch, length] bool: positions whose context token is neither padding nor EOS.

    The context starts with the decoder's start token, which always counts whatever its id (T5
    starts with the pad id, GPT-2 with the EOS id); so every prediction up to and including
    the one of the first EOS counts, and none after it.
    """
    is_eos = context == eos_id
    is_eos[:, 0] = False
    after_eos = torch.cumsum(is_eos.int(), dim=-1) > 0  # from the first EOS on, even non-pad
    counted = (context != pad_id) & ~after_eos
    counted[:, 0] = True
    return counted


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       mask: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """Mean over counted positions of -sum_v p_T(v) log p_S(v) (temperature 1).

    `top_k` keeps the teacher's k largest logits, renormalised with softmax, zero elsewhere;
    None or a k at least the vocabulary keeps the full distribution. Logits are
    [batch, length, vocab], mask [batch, length]; no counted position gives 0.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: they need one tokenizer")
    teacher_logits = teacher_logits.detach().float()
    if top_k is not None and top_k < teacher_logits.shape[-1]:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        kept = teacher_logits.topk(top_k, dim=-1)
        teacher_logits = torch.full_like(teacher_logits, float("-inf")).scatter(
            -1, kept.indices, kept.values)
    teacher_probs = teacher_logits.softmax(-1)
    log_student = F.log_softmax(student_logits.float(), dim=-1)
    # 0 * -inf would be nan where the teacher gives no mass: those terms are exactly 0
    per_position = -(teacher_probs * log_student).nan_to_num(0.0, posinf=0.0, neginf=0.0).sum(-1)
    counted = mask.to(per_position.dtype)
    return (per_position * counted).sum() / counted.sum().clamp(min=1.0)


def imitation_targets(teacher_logits: torch.Tensor, data_targets: torch.Tensor,
                      rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ImitKD's hard targets: the teacher's argmax on rollout rows, the data's elsewhere.

    Positions the mask does not count become IGNORE, so cross-entropy skips them.
    """
    oracle = teacher_logits.argmax(-1)
    targets = torch.where(rows[:, None], oracle, data_targets)
    return targets.masked_fill(~mask, IGNORE)


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """Teacher-forcing contexts from labels: the start token, then labels[:-1], IGNORE as pad."""
    context = torch.full_like(labels, pad_id)
    context[:, 0] = start_id
    context[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE, pad_id)
    return context
