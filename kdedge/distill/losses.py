"""Distillation losses: small modules with one signature, combined by configured weights.

Each takes (student: Outputs, teacher: Outputs | None, batch) and returns a scalar tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdedge.distill import generation
from kdedge.distill.divergence import tempered_kl
from kdedge.distill.multi_teacher import Gather, TeacherSelector, per_teacher_kd
from kdedge.registry import Registry
from kdedge.training.outputs import Feedback, Outputs

LOSSES: Registry[type[nn.Module]] = Registry("loss")


@LOSSES.register("ce")
class HardLabelCE(nn.Module):
    """Cross-entropy on the gold labels; rows labelled -100 (teacher-labelled only) are skipped."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        labels = batch["labels"].long()  # ids; float when a multi-task split also holds scores
        if not bool((labels != -100).any()):  # a batch of teacher-labelled rows only
            return student.logits.sum() * 0.0
        return F.cross_entropy(student.logits, labels, ignore_index=-100)


@LOSSES.register("mse_gold")
class GoldMSE(nn.Module):
    """Regression's hard-label loss: MSE between the student's one output and the gold score.

    Rows whose label is NaN (teacher-labelled only) are skipped, as cross-entropy skips -100.
    """

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        assert student.logits.shape[-1] == 1, "the mse_gold loss needs a one-output regression head"
        scores, labels = student.logits.squeeze(-1), batch["labels"].to(student.logits.dtype)
        known = ~torch.isnan(labels)
        if not bool(known.any()):  # a batch of teacher-labelled rows only
            return student.logits.sum() * 0.0
        return F.mse_loss(scores[known], labels[known])


@LOSSES.register("kl")
class SoftTargetKL(nn.Module):
    """Hinton et al. (2015): KL(teacher || student) on logits softened by T, scaled by T^2.

    The T^2 factor keeps the gradient scale of the soft term comparable to the hard term as T
    changes, so alpha means the same thing at every temperature.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        assert teacher is not None, "the kl loss needs teacher outputs"
        return tempered_kl(student.logits, teacher.logits, self.temperature).mean()


@LOSSES.register("mse_logits")
class LogitMSE(nn.Module):
    """Mean squared error between raw logits (Ba & Caruana 2014); for regression, between the
    student's and the teacher's scores."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        assert teacher is not None, "the mse_logits loss needs teacher outputs"
        return F.mse_loss(student.logits, teacher.logits)


@LOSSES.register("l1_logits")
class LogitL1(nn.Module):
    """Sum over classes of |student - teacher| logits, averaged over the batch (Kim et al. 2021)."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        assert teacher is not None, "the l1_logits loss needs teacher outputs"
        return (student.logits - teacher.logits).abs().sum(-1).mean()


@LOSSES.register("representation")
class SentenceMatch(nn.Module):
    """Distance between student and teacher sentence vectors (two-stage KD, stage 1).

    When the widths differ, a learned linear projection maps the student's vector to the
    teacher's width; it trains with the student and is dropped afterwards.
    """

    def __init__(self, student_dim: int, teacher_dim: int, pooling: str = "cls",
                 distance: str = "mse") -> None:
        super().__init__()
        self.pooling, self.distance = pooling, distance
        self.projection = nn.Linear(student_dim, teacher_dim) if student_dim != teacher_dim else None

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        assert teacher is not None, "the representation loss needs teacher outputs"
        mask = batch["attention_mask"]
        s = student.sentence_vector(self.pooling, mask)
        if self.projection is not None:
            s = self.projection(s)
        t = teacher.sentence_vector(self.pooling, mask)
        if self.distance == "cosine":
            return (1 - F.cosine_similarity(s, t, dim=-1)).mean()
        if self.distance == "l1":
            return F.l1_loss(s, t)
        return F.mse_loss(s, t)


def annealing_phi(epoch: int, tau_max: int, epochs: int, clamp: bool = True) -> float:
    """Annealing-KD's factor for 1-indexed `epoch` of phase I: a staircase from 1/tau_max to 1.

    The factor rises by 1/tau_max every k = max(1, epochs // tau_max) epochs, as in the authors'
    code. When `epochs` is not a multiple of tau_max their loop overshoots past 1; `clamp` holds
    it at 1 instead (Jafari et al. 2021; see methods-from-papers.md, section 1.3).
    """
    step = max(1, epochs // tau_max)
    level = 1 + (epoch - 1) // step
    return min(level, tau_max) / tau_max if clamp else level / tau_max


@LOSSES.register("annealed_mse")
class AnnealedLogitMSE(nn.Module):
    """Annealing-KD phase I: MSE between raw student logits and Phi(epoch) x teacher logits."""

    def __init__(self, tau_max: int = 7, epochs: int = 14, clamp: bool = True) -> None:
        super().__init__()
        self.tau_max, self.epochs, self.clamp = tau_max, epochs, clamp
        self.phi = annealing_phi(1, tau_max, epochs, clamp)

    def begin_epoch(self, epoch: int) -> None:
        self.phi = annealing_phi(epoch, self.tau_max, self.epochs, self.clamp)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        assert teacher is not None, "the annealed_mse loss needs teacher outputs"
        return F.mse_loss(student.logits, self.phi * teacher.logits)


@LOSSES.register("multi_teacher_kd")
class MultiTeacherKD(nn.Module):
    """sum_k w_jk KD(teacher k, student) per instance, averaged over the batch."""

    def __init__(self, teachers: int, temperature: float = 2.0, weighting: str = "uniform",
                 weights: tuple[float, ...] | None = None, rl: dict[str, Any] | None = None,
                 regression: bool = False) -> None:
        super().__init__()
        self.teachers, self.temperature, self.regression = teachers, temperature, regression
        self.weighting = weighting
        fixed = torch.tensor(weights if weighting == "fixed" else [1.0] * teachers)
        self.register_buffer("fixed", fixed / fixed.sum(), persistent=False)
        # The selector learns with its own optimizer, so it is kept out of this module's
        # parameters: the student's optimizer must never update the policy.
        self.selector = TeacherSelector(teachers, regression=regression, **(rl or {})) \
            if weighting == "rl-select" else None

    def begin_epoch(self, epoch: int) -> None:
        if self.selector is not None:
            self.selector.begin_epoch(epoch)

    def get_extra_state(self) -> dict[str, Any]:
        """The selector's learned state, so a training checkpoint carries it (see checkpoint.py)."""
        return {} if self.selector is None else self.selector.checkpoint_state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.selector is not None and state:
            self.selector.restore_state(state)

    def end_epoch(self) -> dict[str, float]:
        return self.selector.end_epoch() if self.selector is not None else {}

    def after_step(self, passes: list[Feedback], gather: Gather) -> None:
        if self.selector is not None:
            self.selector.learn(passes, gather)

    @property
    def wants_feedback(self) -> bool:
        """While the selector learns (after its warm-up), it needs every step's effect."""
        return self.selector is not None and self.selector.learning

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        assert teacher is not None and teacher.ensemble is not None, \
            "the multi_teacher_kd loss needs every teacher's logits"
        kd = per_teacher_kd(student.logits, teacher.ensemble, self.temperature, self.regression)
        if self.selector is None:
            weights = self.fixed.expand_as(kd)
        else:
            chosen = self.selector.select(student.logits.detach(), teacher, batch)
            weights = chosen / chosen.sum(1, keepdim=True).clamp(min=1.0)
        return (weights * kd).sum(1).mean()


@LOSSES.register("per_task")
class PerTask(nn.Module):
    """Multi-task training: a batch comes from one task (batch["task"], the target's 0 when
    absent) and takes that task's own terms, e.g. cross-entropy and KL for a classification
    head, MSE to the gold and the teacher's score for a regression head."""

    def __init__(self, tasks: Sequence[Sequence[tuple[str, float, dict[str, Any]]]]) -> None:
        super().__init__()
        self.tasks = nn.ModuleList([build(terms) for terms in tasks])

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        total, _ = self.tasks[batch.get("task", 0)](student, teacher, batch)
        return total


class WeightedSum(nn.Module):
    """sum_i w_i * loss_i, also returning each term for logging."""

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        self.names = [name for name, _, _ in terms]
        self.weights = [weight for _, weight, _ in terms]
        self.losses = nn.ModuleList([loss for _, _, loss in terms])

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """Tell scheduled losses the epoch (1-indexed); returns their state for the history."""
        state = {}
        for name, loss in zip(self.names, self.losses, strict=True):
            if hasattr(loss, "begin_epoch"):
                loss.begin_epoch(epoch)
            if hasattr(loss, "phi"):
                state[f"{name}_phi"] = loss.phi
        return state

    def end_epoch(self) -> dict[str, float]:
        """What losses that learn on their own (a teacher selector) report about the epoch."""
        state: dict[str, float] = {}
        for loss in self.losses:
            if hasattr(loss, "end_epoch"):
                state.update(loss.end_epoch())
        return state

    @property
    def teacher_layers(self) -> tuple[int, ...]:
        """The teacher layers whose pooled vectors the terms read (a term declares its own
        `teacher_layers`); the teacher-output cache keeps them."""
        return tuple(sorted({layer for loss in self.losses
                             for layer in getattr(loss, "teacher_layers", ())}))

    @property
    def wants_feedback(self) -> bool:
        """Whether a term learns from the student's outputs before and after each step."""
        return any(getattr(loss, "wants_feedback", False) for loss in self.losses)

    def after_step(self, passes: list[Feedback], gather: Gather) -> None:
        """Hand the step's passes (and the way to gather every process's rows) to the terms
        that learn from them."""
        for loss in self.losses:
            if getattr(loss, "wants_feedback", False):
                loss.after_step(passes, gather)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any],
                ) -> tuple[torch.Tensor, dict[str, float]]:
        total = student.logits.new_zeros(())
        parts = {}
        for name, weight, loss in zip(self.names, self.weights, self.losses, strict=True):
            if weight == 0:
                continue
            value = loss(student, teacher, batch)
            parts[name] = float(value.detach())
            total = total + weight * value
        return total, parts


def build(terms: Sequence[tuple[str, float, dict[str, Any]]]) -> WeightedSum:
    """From (loss name, weight, kwargs) triples, e.g. [("kl", 0.5, {"temperature": 2}), ...]."""
    return WeightedSum([(name, weight, LOSSES.get(name)(**kwargs)) for name, weight, kwargs in terms])


# Generation: token-level terms on a decoder's [batch, length, vocab] logits. The batch carries
# `labels` (the next token at every context position, IGNORE where none), `mask` (the counted
# positions, see generation.position_mask) and, for ImitKD, `rollout` (the rolled-out rows).

@LOSSES.register("token_ce")
class TokenCE(nn.Module):
    """Cross-entropy to the target tokens (gold, or the teacher's beam output for seq-kd)."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        targets = batch["labels"].masked_fill(~batch["mask"], generation.IGNORE)
        return F.cross_entropy(student.logits.transpose(1, 2).float(), targets,
                               ignore_index=generation.IGNORE)


@LOSSES.register("word_kd")
class WordKD(nn.Module):
    """Soft cross-entropy to the teacher's per-token distribution on the counted positions."""

    def __init__(self, top_k: int | None = None) -> None:
        super().__init__()
        self.top_k = top_k

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        assert teacher is not None, "word_kd needs the teacher's logits"
        return generation.soft_cross_entropy(student.logits, teacher.logits, batch["mask"],
                                             self.top_k)


@LOSSES.register("imitation_ce")
class ImitationCE(nn.Module):
    """ImitKD's oracle loss: the teacher's argmax on rolled-out rows, the data's next token on
    the others."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        assert teacher is not None, "imitation_ce needs the teacher's logits"
        targets = generation.imitation_targets(teacher.logits, batch["labels"], batch["rollout"],
                                               batch["mask"])
        return F.cross_entropy(student.logits.transpose(1, 2).float(), targets,
                               ignore_index=generation.IGNORE)


@LOSSES.register("l2kd_word")
class LifelongWordKD(nn.Module):
    """L2KD's word-level KD (Chuang et al. 2020, their get_distil_losses). On the new task's
    rows: tau^2 KL(teacher || student) between the next-token distributions at temperature tau,
    averaged over the target (answer) positions, plus lm_weight x the same averaged over the
    language-model positions (the prompt's next tokens). Replayed rows (batch["pseudo"]) take
    the NLL of their own tokens on the same positions instead (LAMOL), added."""

    def __init__(self, temperature: float = 2.0, lm_weight: float = 0.0) -> None:
        super().__init__()
        self.temperature, self.lm_weight = temperature, lm_weight

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        pseudo = batch.get("pseudo")
        replayed_rows = (torch.zeros(len(batch["mask"]), dtype=torch.bool, device=batch["mask"].device)
                         if pseudo is None else pseudo)[:, None]
        total = student.logits.sum() * 0.0
        for positions, weight in ((batch["mask"], 1.0), (batch.get("prompt_mask"), self.lm_weight)):
            if positions is None or weight == 0:
                continue
            real, replayed = positions & ~replayed_rows, positions & replayed_rows
            if bool(real.any()):
                assert teacher is not None, "l2kd_word needs the teacher's logits"
                total = total + weight * tempered_kl(student.logits[real], teacher.logits[real],
                                                     self.temperature).mean()
            if bool(replayed.any()):
                total = total + weight * F.cross_entropy(student.logits[replayed].float(),
                                                         batch["labels"][replayed])
        return total


@LOSSES.register("prompt_lm")
class PromptLM(nn.Module):
    """Cross-entropy of the prompt's next tokens (LAMOL's language-model term), on models whose
    layout labels them (batch["prompt_mask"]); zero elsewhere."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: dict[str, Any]) -> torch.Tensor:
        prompt = batch.get("prompt_mask")
        if prompt is None or not bool(prompt.any()):
            return student.logits.sum() * 0.0
        return F.cross_entropy(student.logits[prompt].float(), batch["labels"][prompt])
