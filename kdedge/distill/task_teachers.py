"""The teachers of multi-task distillation (MKD): one multi-task teacher, or one per task.

multi-task, the paper's (an MT-DNN-style teacher: shared layers, a head per task): the teacher
stage's teacher gets an output layer per other task and is fine-tuned on every task's training
data at once, through the one training loop, each batch from one task (multi_task.task_sampler)
with that task's gold loss (cross-entropy, or MSE to a score). The student then distils from
that one teacher: the target's outputs come from its own head, every other task's logits from
that task's head. per-task: each task's own teacher (tasks[].teacher), fine-tuned on that task
alone as multi-teacher's extra teachers are (teachers.teacher_logits).

The multi-task teacher is kept in the user cache beside the fine-tuned teachers
(teacher/cache.py), keyed by the teacher stage's weights, every task's data, teacher.training,
the sampler and the seed. It is safetensors only: the model with the target's head in the
Hugging Face layout, the other heads in task_heads.safetensors beside it. Its weights are only
borrowed, as an extra teacher's are: the distill manifest names the cache folder and the files'
sha256, which also key the teacher-output cache of each head.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdedge.artifacts import MODEL_DIR, fingerprint, read_json, sha256_file
from kdedge.config import KdedgeConfig, TaskConfig
from kdedge.data import stage as data_stage
from kdedge.data.dataset import TaskData, load_task
from kdedge.demo import cache_dir
from kdedge.distill import losses, teachers
from kdedge.distill.multi_task import (
    HEADS_FILE,
    AuxTask,
    MultiTaskModel,
    check_kind,
    joint_split,
    load_heads,
    mean_validation_score,
    sampling_probabilities,
    save_heads,
    task_sampler,
)
from kdedge.distill.recipes import gold_loss
from kdedge.evaluate import evaluate_splits, headline
from kdedge.hf import save_verified
from kdedge.teacher.cache import store
from kdedge.training import teacher_cache
from kdedge.training.trainer import train

log = logging.getLogger("kdedge")

TASKS_DIR = "tasks"


@dataclass
class Teaching:
    """What the student distils from: the target's teacher, the sha256 of its weight files
    (they key the teacher-output cache), and the other tasks with their teacher's logits."""

    teacher: Any
    weights: list[str]
    tasks: list[AuxTask]
    summary: dict[str, Any]  # the multi-task teacher's (cache folder, history, scores per
    # task); empty with per-task teachers, whose summaries are in their tasks


def prepare(cfg: KdedgeConfig, work: Path, teacher: Any, tokenizer: Any, target: TaskData,
            weights: list[str], data_fingerprint: str, checkpoints: Path | None = None,
            ) -> Teaching:
    """Every other task's data (written under tasks/<name>/), then the teachers the student
    learns from: the multi-task teacher made from `teacher`, or each task's own."""
    tasks = [_task_data(task, cfg, work / TASKS_DIR / task.name)
             for task in cfg.distill.multi_task.tasks]
    if cfg.distill.multi_task.teacher == "per-task":
        return Teaching(teacher, weights, [
            _own_teacher(task_cfg, aux, cfg, work / TASKS_DIR / aux.name)
            for task_cfg, aux in zip(cfg.distill.multi_task.tasks, tasks, strict=True)], {})
    return multi_task_teacher(cfg, teacher, tokenizer, target, tasks, weights, data_fingerprint,
                              work, checkpoints)


def _task_data(task: TaskConfig, cfg: KdedgeConfig, folder: Path) -> AuxTask:
    log.info("  task %r: data from %s", task.name, task.data.source)
    folder.mkdir(parents=True, exist_ok=True)
    data_stage.prepare(task.data, cfg.run.seed, folder)
    data = load_task(folder)
    check_kind(task.name, data)
    data_fp = fingerprint("data", {"data": task.data.model_dump(mode="json"), "seed": cfg.run.seed},
                          {})
    return AuxTask(task.name, data, data_fp)


def _own_teacher(task: TaskConfig, aux: AuxTask, cfg: KdedgeConfig, folder: Path) -> AuxTask:
    """The task with its own teacher's logits (fine-tuned on the task alone unless it has a head)."""
    log.info("  task %r: teacher %s", aux.name, task.teacher.model)
    train_split = aux.data.splits["train"]
    logits, metrics, _ = teachers.teacher_logits(task.teacher, aux.data, train_split,
                                                 aux.data_fingerprint, cfg, folder)
    return dataclasses.replace(aux, teacher_logits=logits, teacher_summary=_summary(
        aux, task.teacher.model, metrics["fine_tuned"], metrics))


def _summary(aux: AuxTask, teacher: str, fine_tuned: bool, metrics: dict[str, Any],
             ) -> dict[str, Any]:
    """A task's line of the distill manifest, about its data and its teacher."""
    return {"teacher": teacher, "fine_tuned": fine_tuned, "kind": aux.data.kind,
            "labels": aux.data.labels, "train_examples": len(aux.data.splits["train"]),
            **({"teacher_test": headline(aux.data, metrics["test"])} if "test" in metrics else {})}


def multi_task_teacher(cfg: KdedgeConfig, teacher: Any, tokenizer: Any, target: TaskData,
                       tasks: list[AuxTask], weights: list[str], data_fingerprint: str,
                       work: Path, checkpoints: Path | None = None) -> Teaching:
    """The teacher stage's `teacher` (weights: its files' sha256) with a head per other task,
    fine-tuned on every task (or found in the cache), and each head's logits on its task's
    training rows."""
    from transformers import AutoModelForSequenceClassification

    m, max_length = cfg.distill.multi_task, cfg.data.max_length
    key = fingerprint("multi-task-teacher", {
        "training": cfg.teacher.training.model_dump(mode="json"), "sampler": m.sampler,
        "sampler_temperature": m.sampler_temperature, "seed": cfg.run.seed,
        "max_length": max_length, "tasks": [t.name for t in tasks]},
        {"teacher": ",".join(sorted(weights)), "data": data_fingerprint,
         **{f"data.{t.name}": t.data_fingerprint for t in tasks}})
    cached = cache_dir() / "teachers" / f"multi-task-{key}"
    num_labels = [target.num_labels, *(t.data.num_labels for t in tasks)]
    datas = [data.view("teacher") for data in (target, *(t.data for t in tasks))]  # what it reads
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        if (cached / "metrics.json").is_file():
            log.info("  multi-task teacher found in the cache (%s)", cached)
            folder = cached / MODEL_DIR
            model = MultiTaskModel(AutoModelForSequenceClassification.from_pretrained(folder).eval(),
                                   num_labels)
            load_heads(model, tasks, folder / HEADS_FILE)
            metrics = {**read_json(cached / "metrics.json"), "cache_hit": True}
        else:
            folder = Path(tmp) / MODEL_DIR
            model = MultiTaskModel(teacher, num_labels)
            metrics = {**fine_tune(model, tokenizer, datas, cfg, checkpoints), "cache_hit": False,
                       "scores": {name: _headlines(data, evaluate_splits(
                           model.view(number), tokenizer, data, max_length))
                           for number, (name, data) in enumerate(zip(
                               ["target", *(t.name for t in tasks)], datas, strict=True))}}
            probe = datas[0].splits["validation"].texts[:8]
            save_verified(model.student, tokenizer, folder, probe, max_length)
            save_heads(model, tasks, folder / HEADS_FILE)
            store(cached, folder, metrics)
        files = [sha256_file(p) for p in sorted(folder.glob("*.safetensors"))]
    scores = metrics["scores"]
    out = []
    for number, aux in enumerate(tasks, start=1):
        split = aux.data.splits["train"]
        outputs, _ = teacher_cache.teacher_outputs(
            teacher_cache.cache_folder([*files, f"head:{aux.name}"], split.teacher_view,
                                       max_length),
            model.view(number), tokenizer, split, max_length)
        out.append(dataclasses.replace(aux, teacher_logits=outputs["logits"], teacher_summary=_summary(
            aux, f"{cfg.teacher.model} (multi-task)", True, scores.get(aux.name, {}))))
    summary = {"cache": str(cached), "weights": files, **metrics}
    return Teaching(model.student, files, out, summary)


def fine_tune(model: MultiTaskModel, tokenizer: Any, tasks: list[TaskData], cfg: KdedgeConfig,
              checkpoints: Path | None = None) -> dict[str, Any]:
    """Train the multi-task teacher (tasks[0] the target) on every task's gold labels through
    the one loop, batches drawn per task; it keeps the epoch of the best mean validation score
    over the tasks. Returns the history and that epoch."""
    t, m, max_length = cfg.teacher.training, cfg.distill.multi_task, cfg.data.max_length
    split, offsets, sizes = joint_split([data.splits["train"] for data in tasks])
    probabilities = sampling_probabilities(sizes, m.sampler, m.sampler_temperature)
    log.info("  fine-tuning the multi-task teacher on %d tasks, %d examples", len(tasks), len(split))
    gold = losses.build([("per_task", 1.0, {"tasks": [[(gold_loss(data.is_regression), 1.0, {})]
                                                      for data in tasks]})])
    result = train(model, tokenizer, split, gold, teacher=lambda batch: None,
                   evaluate=lambda mt: mean_validation_score(mt, tasks, tokenizer, max_length),
                   cfg=t, max_length=max_length, seed=cfg.run.seed,
                   description="multi-task teacher", config_key="teacher.training",
                   sampler=task_sampler(offsets, sizes, t.batch_size, probabilities),
                   checkpoints=checkpoints)
    return {"history": result.history, "best_epoch": result.best_epoch,
            "mean_validation_score": result.best_score}


def _headlines(data: TaskData, metrics: dict[str, Any]) -> dict[str, Any]:
    """Validation and test summaries (none on the processes that do not evaluate)."""
    return {split: headline(data, metrics[split]) for split in ("validation", "test")
            if split in metrics}
