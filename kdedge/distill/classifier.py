"""Distilling a classifier or regressor: build the student, train it with the recipe's losses
over the cached teacher outputs, keep the best epoch."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdedge.artifacts import MODEL_DIR, STUDENT_DIR
from kdedge.config import AUTO_STUDENT
from kdedge.data.dataset import TaskData
from kdedge.distill import augment, losses, multi_task, task_teachers, teachers
from kdedge.distill.recipes import RECIPES, Dims
from kdedge.evaluate import evaluate_splits, student_beats_teacher, validation_score
from kdedge.hf import save_verified
from kdedge.models import vocabulary
from kdedge.models.students import build_student
from kdedge.training import teacher_cache
from kdedge.training.outputs import Outputs
from kdedge.training.trainer import train

log = logging.getLogger("kdedge")


@dataclass
class Shared:
    """What every student of one run trains from: the teacher (its outputs are cached on disk
    per text set), its tokenizer and the training split, possibly augmented."""

    teacher: Any  # for multi-task with its multi-task teacher: that teacher's target head
    tokenizer: Any
    train_split: Any
    teacher_weights: list[str]
    tasks: list[multi_task.AuxTask] = field(default_factory=list)  # multi-task: the other tasks
    multi_task_teacher: dict[str, Any] = field(default_factory=dict)  # its summary, if any


@dataclass
class Trained:
    """One student after (some of) its training."""

    student: Any
    tokenizer: Any
    info: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float  # the primary validation metric of the kept state
    paused: bool  # stopped at stop_after, before the recipe's last epoch
    cache_hit: bool
    train_split: Any
    added: int
    ensemble: list[dict[str, Any]] = field(default_factory=list)
    tasks_metrics: dict[str, Any] = field(default_factory=dict)


def run(ctx, task: TaskData) -> dict[str, Any]:
    """The distill stage for a labelled task: the configured student, or with student auto the
    winner of the student search (kdedge/search/run.py)."""
    cfg, max_length = ctx.cfg.distill, ctx.cfg.data.max_length
    shared = prepare(ctx, task)
    searched = None
    if cfg.student == AUTO_STUDENT:
        from kdedge.search.run import search

        trained, searched = search(ctx, task, shared, distill_student)
    else:
        trained = distill_student(ctx, task, shared, cfg.student, cfg.vocabulary, ctx.checkpoints)
    multi_task_teacher = shared.multi_task_teacher
    del shared  # the cached outputs were all the loop needed from the teacher
    student, tokenizer = trained.student, trained.tokenizer
    probe = task.splits["validation"].texts[:8]
    reload_diff = save_verified(student, tokenizer, ctx.work / STUDENT_DIR, probe, max_length)
    scores = evaluate_splits(student, tokenizer, task, max_length)
    beaten = student_beats_teacher(ctx.manifest("teacher").metrics, scores, task.primary_metric)
    if beaten:
        log.warning("  %s", beaten["sentence"])
    return {
        "recipe": cfg.recipe,
        "student": trained.info,
        "teacher_outputs_cache": "hit" if trained.cache_hit else "miss",
        "extra_teachers": trained.ensemble,
        **({"multi_task_teacher": multi_task_teacher} if multi_task_teacher else {}),
        "tasks": trained.tasks_metrics,
        "training_examples": len(trained.train_split),
        "augmented": {"added": trained.added, "kept": augment.count_added(trained.train_split)},
        "history": trained.history,
        "best_epoch": trained.best_epoch,
        "reload_max_abs_diff": reload_diff,
        **({"search": searched} if searched is not None else {}),
        **scores,
    }


def prepare(ctx, task: TaskData) -> Shared:
    """The teacher, its tokenizer and the training split (augmented when asked)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = ctx.cfg.distill
    teacher_dir = ctx.input("teacher") / MODEL_DIR
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    train_split = task.splits["train"]
    if cfg.augment.active:
        train_split = augment.augmented(train_split, cfg.augment, ctx.input("data"),
                                        tokenizer.mask_token, ctx.cfg.run.seed,
                                        ctx.cfg.data.teacher_text_column)
    weights = [meta["sha256"] for rel, meta in ctx.manifest("teacher").outputs.items()
               if rel.endswith((".safetensors", ".bin"))]
    if cfg.recipe != "multi-task":
        return Shared(teacher, tokenizer, train_split, weights)
    teaching = task_teachers.prepare(
        ctx.cfg, ctx.work, teacher, tokenizer, task, weights, ctx.input_fingerprints["data"],
        None if ctx.checkpoints is None else ctx.checkpoints / "multi-task-teacher")
    return Shared(teaching.teacher, tokenizer, train_split, teaching.weights, teaching.tasks,
                  teaching.summary)


def distill_student(ctx, task: TaskData, shared: Shared, spec: str, vocabulary_setting: str,
                    checkpoints: Path | None, stop_after: int | None = None,
                    learning_rate: float | None = None) -> Trained:
    """Build the student `spec`, train it with the recipe's phases over the cached teacher
    outputs and keep its best epoch. With `stop_after`, pause after that many epochs of the
    recipe (counted over its phases); called again with the same `checkpoints`, it goes on from
    there (or, once finished, restores the kept state without training). `learning_rate`
    replaces distill.training's."""
    cfg, max_length = ctx.cfg.distill, ctx.cfg.data.max_length
    teacher, tokenizer, train_split = shared.teacher, shared.tokenizer, shared.train_split
    student, info = build_student(spec, teacher, ctx.cfg.teacher.trust_remote_code)
    extra_teachers = len(cfg.multi_teacher.teachers) if cfg.recipe == "multi-teacher" else 0
    aux_tasks = shared.tasks
    dims = Dims(student_hidden=info["state_size"], teacher_hidden=teacher.config.hidden_size,
                teachers=1 + extra_teachers, regression=task.is_regression,
                tasks=(task.is_regression, *(t.data.is_regression for t in aux_tasks)))
    phases = [(phase, losses.build(phase.losses)) for phase in RECIPES.get(cfg.recipe)(cfg, dims)]
    layers = sorted({layer for _, loss in phases for layer in loss.teacher_layers})

    cached, cache_hit = teacher_cache.teacher_outputs(
        teacher_cache.cache_folder(shared.teacher_weights, train_split.teacher_view, max_length,
                                   layers),
        teacher, tokenizer, train_split, max_length, layers=layers)
    added = augment.count_added(train_split)
    if added:
        train_split, cached = augment.keep_confident(train_split, cached, cfg.augment, teacher,
                                                     tokenizer, max_length, ctx.cfg.run.seed)
        log.info("  %d teacher-labelled examples added, %d kept by the confidence filter", added,
                 augment.count_added(train_split))
    ensemble: list[dict[str, Any]] = []
    if cfg.recipe == "multi-teacher":
        cached["ensemble"], ensemble = teachers.ensemble_logits(
            ctx.cfg, ctx.input_fingerprints["data"], task, train_split, cached["logits"], ctx.work)
    tokenizer, info["vocabulary"] = vocabulary.apply(vocabulary_setting, student, tokenizer,
                                                     train_split.texts)
    info["parameters"] = sum(p.numel() for p in student.parameters())
    log.info("  student: %s, %.1fM parameters", info["source"], info["parameters"] / 1e6)

    joint = _joint_training(student, train_split, cached, aux_tasks, cfg) if aux_tasks else None

    history: list[dict[str, Any]] = []
    tasks_metrics: dict[str, Any] = {}
    best_epoch, best_score, paused = 0, float("-inf"), False
    budget = stop_after
    for number, (phase, loss) in enumerate(phases, start=1):
        if budget is not None and budget <= 0:
            paused = True
            break
        training = cfg.training.model_copy(update={"epochs": phase.epochs or cfg.training.epochs,
                                                   **({"learning_rate": learning_rate}
                                                      if learning_rate else {})})
        model, split, sampler = student, train_split, None
        teacher_fn = lambda batch: cached_outputs(cached, batch["index"])  # noqa: E731
        evaluate = lambda m: validation_score(m, tokenizer, task, max_length)  # noqa: E731
        if phase.all_tasks and joint is not None:
            model, split, teacher_fn, sampler = joint
            evaluate = lambda m: multi_task.mean_validation_score(  # noqa: E731
                m, [task, *(t.data for t in aux_tasks)], tokenizer, max_length)
        result = train(model, tokenizer, split, loss, teacher=teacher_fn,
                       evaluate=evaluate,
                       cfg=training, max_length=max_length, seed=ctx.cfg.run.seed,
                       description=f"student ({phase.name})", hidden_states=phase.hidden_states,
                       keep=phase.keep, sampler=sampler,
                       prepare=None if phase.span_mask is None
                       else augment.span_masking(tokenizer, *phase.span_mask, ctx.cfg.run.seed),
                       checkpoints=None if checkpoints is None
                       else checkpoints / f"{number}-{phase.name}", stop_after=budget,
                       length_buckets=task.length_buckets)
        history += [{"phase": phase.name, **row} for row in result.history]
        best_epoch, best_score = result.best_epoch, result.best_score
        if result.paused:
            paused = True
            break
        if budget is not None:
            budget -= training.epochs
        if phase.all_tasks and joint is not None:  # the multi-task student, before any
            # fine-tuning on the target alone: its score on every other task, and their heads
            tasks_metrics = multi_task.evaluate_tasks(model, tokenizer, aux_tasks, max_length)
            multi_task.save_heads(model, aux_tasks, ctx.work / multi_task.HEADS_FILE)
    return Trained(student, tokenizer, info, history, best_epoch, best_score, paused, cache_hit,
                   train_split, added, ensemble, tasks_metrics)


def _joint_training(student: Any, train_split: Any, cached: dict[str, torch.Tensor],
                    aux: list[Any], cfg: Any) -> tuple[Any, Any, Any, Any]:
    """(model with a head per task, joint split, teacher outputs, task sampler) for MKD."""
    split, offsets, sizes = multi_task.joint_split([train_split, *(t.data.splits["train"] for t in aux)])
    model = multi_task.MultiTaskModel(student, [student.config.num_labels] +
                                      [t.data.num_labels for t in aux])
    m = cfg.multi_task
    probabilities = multi_task.sampling_probabilities(sizes, m.sampler, m.sampler_temperature)
    log.info("  tasks: %s", ", ".join(f"{name} {n} rows, p={p:.2f}" for name, n, p in zip(
        ["target", *[t.name for t in aux]], sizes, probabilities, strict=True)))
    sampler = multi_task.task_sampler(offsets, sizes, cfg.training.batch_size, probabilities)
    return model, split, multi_task.joint_teacher(cached, aux, offsets), sampler


def cached_outputs(cached: dict[str, torch.Tensor], index: torch.Tensor) -> Outputs:
    """The teacher's outputs for the rows of one batch."""
    ensemble = cached.get("ensemble")
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in cached.items():  # layer{L}_{pooling}, kept for losses that declared L
        layer, _, pooling = key.removeprefix("layer").partition("_")
        if key.startswith("layer") and layer.isdigit():
            layers.setdefault(int(layer), {})[pooling] = value[index]
    return Outputs(logits=cached["logits"][index],
                   sentence={"cls": cached["sentence_cls"][index],
                             "mean": cached["sentence_mean"][index]},
                   ensemble=None if ensemble is None else ensemble[index], layers=layers or None)
