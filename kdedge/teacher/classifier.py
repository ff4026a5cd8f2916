"""The teacher of a classification or regression task: a model with a head for these labels
(or, for regression, a one-output head), fine-tuned when it has none; cached by fingerprint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kdedge.artifacts import MODEL_DIR, copy_tree, read_json
from kdedge.config import TeacherConfig
from kdedge.data.dataset import TaskData
from kdedge.distill import losses
from kdedge.distill.recipes import gold_loss
from kdedge.errors import KdedgeError
from kdedge.evaluate import evaluate_splits, truncated, validation_score
from kdedge.hf import head_labels, load_classifier, save_verified
from kdedge.teacher.cache import cache_entry, store
from kdedge.training.trainer import train

log = logging.getLogger("kdedge")


def run(ctx, task: TaskData) -> dict[str, Any]:
    """The teacher stage for a labelled task."""
    return prepare(ctx.cfg.teacher, task, ctx.cfg.data.max_length, ctx.cfg.run.seed,
                   ctx.fingerprint, ctx.work / MODEL_DIR, checkpoints=ctx.checkpoints)


def prepare(cfg: TeacherConfig, task: TaskData, max_length: int, seed: int, key: str, out: Path,
            checkpoints: Path | None = None) -> dict[str, Any]:
    """Write the teacher for this task to `out`, fine-tuning it unless cached; return metrics.

    With `checkpoints`, fine-tuning saves every epoch there and continues from the last one.
    """
    cached = cache_entry(key, cfg.model, cfg.revision)
    if (cached / "metrics.json").is_file():
        log.info("  fine-tuned teacher %r found in the cache (%s)", cfg.model, cached)
        copy_tree(cached / MODEL_DIR, out)
        return {**read_json(cached / "metrics.json"), "cache_hit": True}

    model, tokenizer, matched = load_classifier(cfg.model, task.id2label, revision=cfg.revision,
                                                trust_remote_code=cfg.trust_remote_code)
    if cfg.fine_tune == "never" and not matched:
        theirs = head_labels(cfg.model, cfg.revision, cfg.trust_remote_code)
        head = ("regression head (one output)" if task.is_regression
                else f"classification head for the labels {task.labels}")
        raise KdedgeError(f"Teacher {cfg.model!r} has no {head} (it has {theirs}); set fine_tune "
                          "to auto for this teacher so kdedge trains one.")
    fine_tune = cfg.fine_tune == "always" or not matched
    history: list[dict[str, float]] = []
    best_epoch = None
    if fine_tune:
        stop = (f"up to {cfg.training.epochs} epochs, until validation stops improving"
                if cfg.training.patience else f"{cfg.training.epochs} epoch(s)")
        log.info("  fine-tuning teacher %r on %d examples (%s)", cfg.model,
                 len(task.splits["train"]), stop)
        gold = losses.build([(gold_loss(task.is_regression), 1.0, {})])  # CE, or MSE to scores
        result = train(model, tokenizer, task.splits["train"], gold,
                       teacher=lambda batch: None,
                       evaluate=lambda m: validation_score(m, tokenizer, task, max_length),
                       cfg=cfg.training, max_length=max_length, seed=seed,
                       description="teacher", checkpoints=checkpoints,
                       config_key="teacher.training", length_buckets=task.length_buckets)
        history, best_epoch = result.history, result.best_epoch
    metrics = {
        "model": cfg.model,
        "fine_tuned": fine_tune,
        "cache_hit": False,
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_layers": model.config.num_hidden_layers,
        "truncated": {name: truncated(tokenizer, split.texts, max_length)
                      for name, split in task.splits.items()},
        "history": history,
        "best_epoch": best_epoch,
        **evaluate_splits(model, tokenizer, task, max_length),
    }
    cut = sum(metrics["truncated"].values())
    if cut:
        log.warning("  %d texts are longer than data.max_length=%d tokens and were truncated", cut,
                    max_length)
    probe = task.splits["validation"].texts[:8]
    metrics["reload_max_abs_diff"] = save_verified(model, tokenizer, out, probe, max_length)
    store(cached, out, metrics)
    return metrics


