"""Distill stage: build the student, train it with the recipe's losses, keep the best epoch."""

from __future__ import annotations

import logging
from typing import Any

import torch

from kdedge.data.dataset import load_task
from kdedge.distill import augment, losses, teacher_cache
from kdedge.distill.outputs import Outputs
from kdedge.distill.recipes import RECIPES, Dims
from kdedge.distill.students import build_student
from kdedge.distill.trainer import train
from kdedge.evaluate import evaluate_splits, validation_score
from kdedge.hf import save_verified
from kdedge.teacher.stage import MODEL_DIR
from kdedge.torch_utils import set_threads

log = logging.getLogger("kdedge")

STUDENT_DIR = "student"


def run(ctx) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg, max_length = ctx.cfg.distill, ctx.cfg.data.max_length
    set_threads(ctx.cfg.run.threads)
    task = load_task(ctx.input("data"))
    teacher_dir = ctx.input("teacher") / MODEL_DIR
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    train_split = task.splits["train"]
    if cfg.augment.active:
        train_split = augment.augmented(train_split, cfg.augment, ctx.input("data"),
                                        tokenizer.mask_token, ctx.cfg.run.seed)

    teacher_weights = [meta["sha256"] for rel, meta in ctx.manifest("teacher").outputs.items()
                       if rel.endswith((".safetensors", ".bin"))]
    cached, cache_hit = teacher_cache.teacher_outputs(
        teacher_cache.cache_file(teacher_weights, train_split.texts, max_length), teacher, tokenizer,
        train_split, max_length)
    added = augment.count_added(train_split)
    if added:
        train_split, cached = augment.keep_confident(train_split, cached, cfg.augment.min_confidence)
        log.info("  %d teacher-labelled examples added, %d kept by the confidence filter", added,
                 augment.count_added(train_split))
    student, info = build_student(cfg.student, teacher, ctx.cfg.teacher.trust_remote_code)
    del teacher  # the cached logits are all the loop needs from it
    log.info("  student: %s, %.1fM parameters", info["source"], info["parameters"] / 1e6)

    history: list[dict[str, Any]] = []
    best_epoch = 0
    dims = Dims(info["state_size"], cached["sentence_cls"].shape[1], regression=task.is_regression)
    for phase in RECIPES.get(cfg.recipe)(cfg, dims):
        training = cfg.training.model_copy(update={"epochs": phase.epochs or cfg.training.epochs})
        result = train(student, tokenizer, train_split, losses.build(phase.losses),
                       teacher=lambda batch: cached_outputs(cached, batch["index"]),
                       evaluate=lambda m: validation_score(m, tokenizer, task, max_length),
                       cfg=training, max_length=max_length, seed=ctx.cfg.run.seed,
                       description=f"student ({phase.name})", hidden_states=phase.hidden_states,
                       keep=phase.keep)
        history += [{"phase": phase.name, **row} for row in result.history]
        best_epoch = result.best_epoch
    probe = task.splits["validation"].texts[:8]
    reload_diff = save_verified(student, tokenizer, ctx.work / STUDENT_DIR, probe, max_length)
    return {
        "recipe": cfg.recipe,
        "student": info,
        "teacher_outputs_cache": "hit" if cache_hit else "miss",
        "training_examples": len(train_split),
        "augmented": {"added": added, "kept": augment.count_added(train_split)},
        "history": history,
        "best_epoch": best_epoch,
        "reload_max_abs_diff": reload_diff,
        **evaluate_splits(student, tokenizer, task, max_length),
    }


def cached_outputs(cached: dict[str, torch.Tensor], index: torch.Tensor) -> Outputs:
    """The teacher's outputs for the rows of one batch."""
    return Outputs(logits=cached["logits"][index],
                   sentence={"cls": cached["sentence_cls"][index],
                             "mean": cached["sentence_mean"][index]})
