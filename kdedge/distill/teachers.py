"""The other teachers of multi-teacher distillation.

Each is obtained exactly like the teacher stage's (fine-tuned on this task's data unless it
already has a head for these labels, and cached by the same key), then run once over the raw
training texts with its own tokenizer (the teacher's view of them, under paired views); only
its logits are kept, so teachers may differ in architecture and vocabulary but never in labels.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from kdedge.artifacts import MODEL_DIR, sha256_file
from kdedge.config import KdedgeConfig, TeacherConfig
from kdedge.data.dataset import TaskData, TaskSplit
from kdedge.errors import KdedgeError
from kdedge.evaluate import headline
from kdedge.teacher.cache import teacher_key
from kdedge.teacher.classifier import prepare
from kdedge.training import teacher_cache

log = logging.getLogger("kdedge")


def ensemble_logits(cfg: KdedgeConfig, data_fingerprint: str, task: TaskData, split: TaskSplit,
                    first: torch.Tensor, work: Path) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """(examples, teachers, labels) logits, the teacher stage's first; and a summary per teacher."""
    columns, summary = [first], []
    for number, teacher_cfg in enumerate(cfg.distill.multi_teacher.teachers, start=2):
        log.info("  teacher %d: %s", number, teacher_cfg.model)
        logits, metrics, hit = teacher_logits(teacher_cfg, task, split, data_fingerprint, cfg, work)
        columns.append(logits)
        summary.append({"model": teacher_cfg.model, "fine_tuned": metrics["fine_tuned"],
                        "cache_hit": metrics["cache_hit"], "parameters": metrics["parameters"],
                        "outputs_cache": "hit" if hit else "miss",
                        **{name: headline(task, metrics[name]) for name in ("validation", "test")}})
    return torch.stack(columns, 1), summary


def teacher_logits(teacher_cfg: TeacherConfig, task: TaskData, split: TaskSplit,
                   data_fingerprint: str, cfg: KdedgeConfig, work: Path,
                   ) -> tuple[torch.Tensor, dict[str, Any], bool]:
    """A teacher's logits on `split` (cached), its teacher-stage metrics, and whether the
    logits came from the cache. The weights are only borrowed: they stay in the user cache."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    max_length, seed = cfg.data.max_length, cfg.run.seed
    key = teacher_key(teacher_cfg, seed, data_fingerprint)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        folder = Path(tmp) / MODEL_DIR
        metrics = prepare(teacher_cfg, task.view("teacher"), max_length, seed, key, folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        theirs = {int(k): v for k, v in model.config.id2label.items()}
        if theirs != task.id2label:  # prepare() fits the head; a checkpoint could still lie
            raise KdedgeError(f"Teacher {teacher_cfg.model!r} classifies into "
                              f"{list(theirs.values())}, not the data's labels {task.labels}; "
                              "give it fine_tune: always so its head is retrained.")
        weights = [sha256_file(p) for p in sorted(folder.glob("*.safetensors"))]
        cached, hit = teacher_cache.teacher_outputs(
            teacher_cache.cache_folder(weights, split.teacher_view, max_length), model, tokenizer, split,
            max_length)
    return cached["logits"], metrics, hit
