"""Teacher stage: load the teacher; fine-tune it when it has no head for these labels (or, for
regression, no one-output head).

A fine-tuned teacher is cached in the user cache by fingerprint, so a second run (or another
run on the same data and teacher settings) skips the fine-tuning.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

from kdedge import parallel
from kdedge.artifacts import copy_tree, fingerprint, read_json, write_json
from kdedge.config import TeacherConfig
from kdedge.data.dataset import TaskData, load_task
from kdedge.demo import cache_dir
from kdedge.distill import losses
from kdedge.distill.recipes import gold_loss
from kdedge.distill.trainer import train
from kdedge.errors import KdedgeError
from kdedge.evaluate import encode, evaluate_splits, validation_score
from kdedge.hf import head_labels, load_classifier, resolve_source, save_verified
from kdedge.torch_utils import set_threads

log = logging.getLogger("kdedge")

MODEL_DIR = "model"


def run(ctx) -> dict[str, Any]:
    task = load_task(ctx.input("data"))
    set_threads(ctx.cfg.run.threads)
    if task.is_generation:
        from kdedge.teacher import generator

        cfg = ctx.cfg.teacher
        return generator.prepare(cfg, ctx.cfg.data, task, ctx.cfg.run.seed,
                                 cache_entry(ctx.fingerprint, cfg.model, cfg.revision),
                                 ctx.work / MODEL_DIR, ctx.checkpoints)
    return prepare(ctx.cfg.teacher, task, ctx.cfg.data.max_length, ctx.cfg.run.seed,
                   ctx.fingerprint, ctx.work / MODEL_DIR, checkpoints=ctx.checkpoints)


def teacher_key(cfg: TeacherConfig, seed: int, data_fingerprint: str) -> str:
    """The fingerprint the teacher stage would have for this teacher on this data.

    Extra teachers (multi-teacher distillation) use it too, so a teacher fine-tuned once is
    found in the cache whichever role it plays.
    """
    return fingerprint("teacher", {"teacher": cfg.model_dump(mode="json"), "seed": seed},
                       {"data": data_fingerprint})


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
                       config_key="teacher.training")
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


def truncated(tokenizer: Any, texts: list[Any], max_length: int) -> int:
    """How many texts are longer than max_length tokens (and so lose their end)."""
    lengths = encode(tokenizer, texts, max_length=10**6, return_tensors=None, padding=False)
    return sum(len(ids) > max_length for ids in lengths["input_ids"])


def cache_entry(key: str, source: str, revision: str | None) -> Path:
    """Cache folder keyed by the teacher's fingerprint and its files' identity."""
    location = resolve_source(source)
    identity = [location, revision]
    folder = Path(location)
    if folder.is_dir():  # a local teacher: its files' names, sizes and times stand for content
        identity += [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                     for p in sorted(folder.rglob("*")) if p.is_file()]
    key = hashlib.sha256(repr([key, identity]).encode()).hexdigest()[:20]
    return cache_dir() / "teachers" / key


def store(cached: Path, model_dir: Path, metrics: dict[str, Any]) -> None:
    if not parallel.world().is_main:  # one process writes the user cache
        return
    tmp = cached.with_name(cached.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        copy_tree(model_dir, tmp / MODEL_DIR)
        write_json(tmp / "metrics.json", metrics)
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)
    except OSError as err:  # the cache is an optimization: a full disk there must not fail the run
        log.warning("  could not cache the fine-tuned teacher (%s)", err)
        shutil.rmtree(tmp, ignore_errors=True)
