"""Distillation recipes: which losses, with which weights, in which phases, over the one loop.

The teacher's logits and sentence vectors come from the teacher-output cache; a recipe only
names its loss terms per phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdedge.registry import Registry


@dataclass(frozen=True)
class Phase:
    """One run of the training loop: fresh optimizer, starting from the previous phase's best."""

    name: str
    losses: tuple[tuple[str, float, dict[str, Any]], ...]  # (loss name, weight, kwargs)
    epochs: int | None = None  # None: distill.training.epochs
    hidden_states: bool = False  # the student's losses read its hidden states
    keep: str = "best"  # "best" epoch on validation, or "last" (the head is not trained yet)
    all_tasks: bool = False  # multi-task: batches from every task, not only the target's
    targets: str = "data"  # generation: "data" targets, or the teacher's beam outputs ("teacher")
    rollout: bool = False  # generation: mix in the student's own rollouts (ImitKD)
    span_mask: tuple[float, int] | None = None  # the student's input tokens masked in spans:
    # (share of positions starting a span, x span length; the span length), see augment.SpanMasking


@dataclass(frozen=True)
class Dims:
    """Widths the recipe may need to size learned parts of a loss (a projection)."""

    student_hidden: int
    teacher_hidden: int
    teachers: int = 1  # the teacher stage's, plus distill.multi_teacher.teachers
    regression: bool = False  # one output, the score: gold-label terms are MSE, not CE
    tasks: tuple[bool, ...] = ()  # multi-task: `regression` of every task, the target's first
    generation: bool = False  # token-level terms on a generator's decoder


RECIPES: Registry[Any] = Registry("distillation recipe")


@RECIPES.register("gold")
def gold_only(cfg: Any, dims: Dims) -> list[Phase]:
    """The baseline every recipe is measured against: the student on the gold labels (or gold
    target texts) alone, no teacher."""
    return [Phase("gold", (("token_ce" if dims.generation else gold_loss(dims.regression), 1.0,
                            {}),))]


@RECIPES.register("word-kd")
def word_kd(cfg: Any, dims: Dims) -> list[Phase]:
    """Word-level KD (Kim & Rush 2016): alpha x soft cross-entropy to the teacher's per-token
    distribution (top-k truncated when set) + (1 - alpha) x gold token cross-entropy."""
    return [Phase("word-kd", (("word_kd", cfg.alpha, {"top_k": cfg.generation.top_k}),
                              ("token_ce", 1.0 - cfg.alpha, {})))]


@RECIPES.register("seq-kd")
def seq_kd(cfg: Any, dims: Dims) -> list[Phase]:
    """Sequence-level KD (Kim & Rush 2016): the teacher's beam-search outputs replace the gold
    targets; optionally with word-level KD on the same contexts."""
    g = cfg.generation
    return [Phase("seq-kd", (("token_ce", 1.0 - g.seq_kd_word_weight, {}),
                             ("word_kd", g.seq_kd_word_weight, {"top_k": g.top_k})),
                  targets="teacher")]


@RECIPES.register("imitkd")
def imitkd(cfg: Any, dims: Dims) -> list[Phase]:
    """ImitKD (Lin et al. 2020): per sequence, the data context with probability beta (decaying
    over training), else the student's own rollout; the teacher's argmax (oracle) or its full
    distribution on every position of that context. With imitation_data "teacher" (ImitKD*)
    the data contexts and their targets are the teacher's beam outputs, not the gold ones."""
    g = cfg.generation
    loss = (("imitation_ce", 1.0, {}) if g.imitation_target == "oracle"
            else ("word_kd", 1.0, {"top_k": g.top_k}))
    return [Phase("imitkd", (loss,), rollout=True,
                  targets="teacher" if g.imitation_data == "teacher" else "data")]


@RECIPES.register("kd")
def vanilla_kd(cfg: Any, dims: Dims) -> list[Phase]:
    """Hinton et al. (2015): alpha * T^2 KL(soft teacher || soft student) + (1 - alpha) * CE.

    With logit_loss "mse" the soft term is the MSE between raw logits instead (Ba & Caruana).
    For regression: alpha * MSE(student score, teacher score) + (1 - alpha) * MSE(student score,
    gold score), the QE-distillation loss (see `logit_kd_terms`).
    """
    return [Phase("kd", logit_kd_terms(cfg, dims.regression))]


def logit_kd_terms(cfg: Any, regression: bool = False,
                   ) -> tuple[tuple[str, float, dict[str, Any]], ...]:
    """alpha x (KL at T, MSE or L1 between logits) + (1 - alpha) x gold-label CE.

    Regression has one output, a score, and no distribution to soften: logit_loss "kl" (the
    default) and "mse" both become MSE to the teacher's score, "l1" stays L1, and the gold term
    is MSE to the gold score; temperature is not used.
    """
    if regression:
        soft = ("l1_logits", cfg.alpha, {}) if cfg.logit_loss == "l1" else ("mse_logits", cfg.alpha, {})
        return soft, (gold_loss(regression), 1.0 - cfg.alpha, {})
    soft = {"kl": ("kl", cfg.alpha, {"temperature": cfg.temperature}),
            "mse": ("mse_logits", cfg.alpha, {}),
            "l1": ("l1_logits", cfg.alpha, {})}[cfg.logit_loss]
    return soft, ("ce", 1.0 - cfg.alpha, {})


def gold_loss(regression: bool) -> str:
    """The loss on gold labels: cross-entropy, or MSE to the gold score for regression."""
    return "mse_gold" if regression else "ce"


@RECIPES.register("annealing")
def annealing_kd(cfg: Any, dims: Dims) -> list[Phase]:
    """Jafari et al. (2021): phase I regresses raw logits on Phi(epoch) x teacher logits (Phi a
    staircase from 1/tau_max to 1); phase II trains on gold labels only (CE, or MSE to the
    gold score for regression), from the best phase-I checkpoint with a fresh optimizer. No
    alpha: the two losses never meet."""
    a = cfg.annealing
    anneal = ("annealed_mse", 1.0, {"tau_max": a.tau_max, "epochs": a.phase1_epochs,
                                     "clamp": a.clamp_phi})
    return [Phase("anneal", (anneal,), a.phase1_epochs),
            Phase("finetune", ((gold_loss(dims.regression), 1.0, {}),), a.phase2_epochs)]


@RECIPES.register("two-stage")
def two_stage_kd(cfg: Any, dims: Dims) -> list[Phase]:
    """Kim et al. (2021), for text students: stage 1 matches sentence vectors (L1 by default,
    a projection where widths differ); stage 2 is the paper's CE + L1 between logits summed over
    classes (MSE to the gold score for regression), or with stage2 "kd" our logit KD (alpha,
    temperature, distill.logit_loss). In stage 2 the student reads span-masked tokens."""
    t = cfg.two_stage
    match = ("representation", 1.0, {"student_dim": dims.student_hidden,
                                      "teacher_dim": dims.teacher_hidden,
                                      "pooling": t.pooling, "distance": t.distance})
    stage2 = (logit_kd_terms(cfg, dims.regression) if t.stage2 == "kd"
              else (("l1_logits", 1.0, {}), (gold_loss(dims.regression), 1.0, {})))
    masking = (t.span_mask_prob, t.span_mask_max) if t.span_mask_prob > 0 else None
    return [Phase("represent", (match,), t.stage1_epochs, hidden_states=True,
                  keep="last"),
            Phase("logits", stage2, t.stage2_epochs, span_mask=masking)]


@RECIPES.register("multi-teacher")
def multi_teacher_kd(cfg: Any, dims: Dims) -> list[Phase]:
    """Yuan et al. (2021) and the equal-weight baseline: alpha x per-instance weighted KD over
    several teachers + (1 - alpha) x gold-label loss. rl-select learns the weights."""
    m = cfg.multi_teacher
    rl = {**m.rl.model_dump(), "seed": int(torch.randint(2**31 - 1, ()).item())}
    soft = ("multi_teacher_kd", cfg.alpha, {"teachers": dims.teachers, "weights": m.weights,
                                             "temperature": cfg.temperature,
                                             "weighting": m.weighting, "rl": rl,
                                             "regression": dims.regression})
    return [Phase("multi-teacher", (soft, logit_kd_terms(cfg, dims.regression)[-1]))]


@RECIPES.register("multi-task")
def multi_task_kd(cfg: Any, dims: Dims) -> list[Phase]:
    """Liu et al. (2019), MKD: logit KD on every task's batches through a shared student with a
    head per task, each task with the terms of its own kind (a classification head: its
    logit loss and CE; a regression head: MSE to the teacher's and the gold score); then
    (optionally) the target task alone with the same loss."""
    m = cfg.multi_task
    kd = cfg.model_copy(update={"logit_loss": m.logit_loss})
    joint = ("per_task", 1.0, {"tasks": tuple(logit_kd_terms(kd, regression)
                                              for regression in dims.tasks or (dims.regression,))})
    phases = [Phase("multi-task", (joint,), all_tasks=True)]
    if m.finetune_epochs:
        phases.append(Phase("target", logit_kd_terms(kd, dims.regression), m.finetune_epochs))
    return phases


@RECIPES.register("lifelong")
def lifelong(cfg: Any, dims: Dims) -> list[Phase]:
    """L2KD (Chuang et al. 2020): the losses of one step of the stream (lifelong.py runs the
    steps). word: on new-task rows tau^2 KL to the teacher's next-token distributions on the
    answer, + lambda x the same on the language-model (prompt) positions; replayed rows take
    the NLL of both (LAMOL). seq: NLL of the teacher's outputs + lambda x the prompt's NLL.
    seq-soft: word on the teacher's outputs. none: the NLL of the gold targets + lambda x the
    prompt's NLL, no teacher (LAMOL without KD). The language-model term is what lets the model
    generate pseudo-samples."""
    life = cfg.lifelong
    word = ("l2kd_word", 1.0, {"temperature": life.temperature, "lm_weight": life.lm_weight})
    terms = (word,) if life.kd in ("word", "seq-soft") else (("token_ce", 1.0, {}),
                                                             ("prompt_lm", life.lm_weight, {}))
    return [Phase("lifelong", terms,
                  targets="teacher" if life.kd in ("seq", "seq-soft") else "data")]
