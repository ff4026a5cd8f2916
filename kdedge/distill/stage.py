"""Distill stage: build the student, train it with the recipe's losses, keep the best epoch."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdedge.data.dataset import TaskSplit, load_task, split_file
from kdedge.demo import cache_dir
from kdedge.distill import losses
from kdedge.distill.outputs import Outputs
from kdedge.distill.recipes import RECIPES
from kdedge.distill.students import build_student
from kdedge.distill.trainer import train
from kdedge.evaluate import evaluate_splits, torch_logits, validation_accuracy
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

    cache_file = _teacher_cache_file(ctx, max_length)
    teacher_logits, cache_hit = cached_teacher_logits(cache_file, teacher, tokenizer, train_split,
                                                      max_length)
    student, info = build_student(cfg.student, teacher, ctx.cfg.teacher.trust_remote_code)
    del teacher  # the cached logits are all the loop needs from it
    log.info("  student: %s, %.1fM parameters", info["source"], info["parameters"] / 1e6)

    history: list[dict[str, Any]] = []
    best_epoch = 0
    for phase in RECIPES.get(cfg.recipe)(cfg):
        training = cfg.training.model_copy(update={"epochs": phase.epochs or cfg.training.epochs})
        result = train(student, tokenizer, train_split, losses.build(phase.losses),
                       teacher=lambda batch: Outputs(logits=teacher_logits[batch["index"]]),
                       evaluate=lambda m: validation_accuracy(m, tokenizer, task, max_length),
                       cfg=training, max_length=max_length, seed=ctx.cfg.run.seed,
                       description=f"student ({phase.name})")
        history += [{"phase": phase.name, **row} for row in result.history]
        best_epoch = result.best_epoch
    probe = task.splits["validation"].texts[:8]
    reload_diff = save_verified(student, tokenizer, ctx.work / STUDENT_DIR, probe, max_length)
    return {
        "recipe": cfg.recipe,
        "student": info,
        "teacher_outputs_cache": "hit" if cache_hit else "miss",
        "history": history,
        "best_epoch": best_epoch,
        "reload_max_abs_diff": reload_diff,
        **evaluate_splits(student, tokenizer, task, max_length),
    }


def _teacher_cache_file(ctx, max_length: int) -> Path:
    """Keyed by the teacher's weights and the train split's content, not by run."""
    teacher_outputs = ctx.manifest("teacher").outputs
    data_outputs = ctx.manifest("data").outputs
    weights = sorted(meta["sha256"] for rel, meta in teacher_outputs.items()
                     if rel.endswith((".safetensors", ".bin")))
    train_rel = split_file(Path("."), "train").name
    key = hashlib.sha256(repr([weights, data_outputs[train_rel]["sha256"], max_length]).encode())
    return cache_dir() / "teacher-outputs" / f"{key.hexdigest()[:20]}.safetensors"


def cached_teacher_logits(path: Path, teacher: Any, tokenizer: Any, split: TaskSplit,
                          max_length: int) -> tuple[torch.Tensor, bool]:
    """The teacher's train-set logits, computed once and kept in the user cache."""
    from safetensors.torch import load_file, save_file

    if path.is_file():
        logits = load_file(path)["logits"]
        if logits.shape[0] == len(split):
            log.info("  teacher logits read from the cache")
            return logits, True
    log.info("  computing teacher logits on %d training examples (once)", len(split))
    logits = torch.from_numpy(np.ascontiguousarray(
        torch_logits(teacher, tokenizer, split.texts, max_length)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"logits": logits}, str(tmp))
    tmp.replace(path)
    return logits, False

