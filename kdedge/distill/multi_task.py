"""Multi-task distillation, MKD (Liu et al. 2019, "MKD: a Multi-Task Knowledge Distillation
Approach for Pretrained Language Models").

One student encoder is shared by every task; each task has its own output layer and its own
teacher. Training draws whole batches from one task at a time (a task sampler decides which),
so heads of different widths never meet in a batch. The run's data and teacher are the target
task: its head is the student's own, so after training the student is an ordinary classifier
for the target task and exports like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdedge.artifacts import fingerprint
from kdedge.config import KdedgeConfig, TaskConfig
from kdedge.data import stage as data_stage
from kdedge.data.dataset import TaskData, TaskSplit, load_task
from kdedge.distill import teachers
from kdedge.errors import KdedgeError
from kdedge.evaluate import evaluate_splits, headline, validation_score
from kdedge.training.outputs import Outputs

log = logging.getLogger("kdedge")

TASKS_DIR = "tasks"
HEADS_FILE = "task_heads.safetensors"


def sampling_probabilities(sizes: list[int], strategy: str, temperature: float) -> np.ndarray:
    """p_t for each task: proportional to n_t, to n_t^(1/T), or uniform."""
    n = np.asarray(sizes, dtype=float)
    if strategy == "uniform":
        weights = np.ones_like(n)
    elif strategy == "temperature":
        weights = n ** (1.0 / temperature)
    else:
        weights = n
    return weights / weights.sum()


def task_sampler(offsets: list[int], sizes: list[int], batch_size: int, probabilities: np.ndarray):
    """An epoch of single-task batches: as many batches as the tasks have together, each
    drawn from task t with probability p_t; a task's rows are reshuffled when used up."""
    total = sum(-(-n // batch_size) for n in sizes)

    def epoch(generator: torch.Generator) -> list[list[int]]:
        draws = torch.multinomial(torch.as_tensor(probabilities), total, replacement=True,
                                  generator=generator).tolist()
        queues: list[list[list[int]]] = [[] for _ in sizes]
        batches = []
        for t in draws:
            if not queues[t]:
                order = (torch.randperm(sizes[t], generator=generator) + offsets[t]).tolist()
                queues[t] = [order[i:i + batch_size] for i in range(0, sizes[t], batch_size)][::-1]
            batches.append(queues[t].pop())
        return batches

    return epoch


class MultiTaskStudent(nn.Module):
    """The student with an extra output layer per task.

    An auxiliary head replaces the student's final output layer (the last Linear producing its
    logits) and reads the same input, so everything below it is shared. Task 0 is the target:
    the student's own head.
    """

    def __init__(self, student: nn.Module, num_labels: list[int]) -> None:
        super().__init__()
        self.student = student
        self.output_layer = output_layer(student)
        width = self.output_layer.in_features
        self.heads = nn.ModuleList([nn.Identity()] + [nn.Linear(width, n) for n in num_labels[1:]])

    def forward(self, task: int = 0, **inputs: Any) -> Any:
        if task == 0:
            return self.student(**inputs)
        head = self.heads[task]
        handle = self.output_layer.register_forward_hook(lambda module, args, out: head(args[0]))
        try:
            return self.student(**inputs)
        finally:
            handle.remove()


def output_layer(model: nn.Module) -> nn.Linear:
    """The last Linear whose width is the number of labels: the one that writes the logits."""
    num_labels = model.config.num_labels
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not layers:
        raise KdedgeError(f"Cannot find the output layer of the {type(model).__name__} student; "
                          "use a transformer or bilstm student for the multi-task recipe.")
    return layers[-1]


@dataclass
class AuxTask:
    name: str
    data: TaskData
    teacher_logits: torch.Tensor  # on data.splits["train"]
    teacher_summary: dict[str, Any]


def prepare_tasks(cfg: KdedgeConfig, work: Path) -> list[AuxTask]:
    """Every other task's data (written under tasks/<name>/) and its teacher's logits."""
    return [_prepare(task, cfg, work / TASKS_DIR / task.name) for task in cfg.distill.multi_task.tasks]


def _prepare(task: TaskConfig, cfg: KdedgeConfig, folder: Path) -> AuxTask:
    log.info("  task %r: data from %s, teacher %s", task.name, task.data.source, task.teacher.model)
    folder.mkdir(parents=True, exist_ok=True)
    data_stage.prepare(task.data, cfg.run.seed, folder)
    data = load_task(folder)
    data_fp = fingerprint("data", {"data": task.data.model_dump(mode="json"), "seed": cfg.run.seed},
                          {})
    train = data.splits["train"]
    logits, metrics, _ = teachers.teacher_logits(task.teacher, data, train, data_fp, cfg, folder)
    summary = {"teacher": task.teacher.model, "fine_tuned": metrics["fine_tuned"],
               "kind": data.kind, "labels": data.labels, "train_examples": len(train),
               "teacher_test": headline(data, metrics["test"])}
    return AuxTask(task.name, data, logits, summary)


def joint_split(target: TaskData, tasks: list[AuxTask], train: TaskSplit,
                ) -> tuple[TaskSplit, list[int], list[int]]:
    """Every task's training rows in one split with task ids; (split, offsets, sizes).

    `train` is the target's training split as distilled (with any augmentation)."""
    mixed = [t.name for t in tasks if t.data.kind != target.kind]
    if mixed:
        raise KdedgeError(f"Task {mixed[0]!r} is not a {target.kind} task like the target; "
                          "multi-task distillation here needs tasks of one kind, so drop it.")
    splits = [train] + [t.data.splits["train"] for t in tasks]
    sizes = [len(s) for s in splits]
    offsets = np.cumsum([0, *sizes[:-1]]).tolist()
    texts = [text for s in splits for text in s.texts]
    labels = np.concatenate([s.labels for s in splits])
    ids = np.concatenate([np.full(n, t, dtype=np.int64) for t, n in enumerate(sizes)])
    return TaskSplit(texts, labels, ids), offsets, sizes


def joint_teacher(target: dict[str, torch.Tensor], tasks: list[AuxTask], offsets: list[int]):
    """Teacher outputs for a single-task batch of the joint split."""
    logits = [target["logits"]] + [t.teacher_logits for t in tasks]

    def outputs(batch: dict[str, Any]) -> Outputs:
        task = batch.get("task", 0)
        rows = batch["index"] - offsets[task]
        if task == 0:
            return Outputs(logits=logits[0][rows], sentence={"cls": target["sentence_cls"][rows],
                                                             "mean": target["sentence_mean"][rows]})
        return Outputs(logits=logits[task][rows])

    return outputs


def mean_validation_score(model: MultiTaskStudent, target: TaskData, tasks: list[AuxTask],
                          tokenizer: Any, max_length: int) -> float:
    """What the joint phase keeps its best epoch by: every task's primary metric counts."""
    scores = [validation_score(_TaskView(model, number), tokenizer, data, max_length)
              for number, data in enumerate([target, *[t.data for t in tasks]])]
    return float(np.mean(scores))


def evaluate_tasks(model: MultiTaskStudent, tokenizer: Any, tasks: list[AuxTask], max_length: int,
                   ) -> dict[str, Any]:
    """Each other task's validation and test metrics through its own head."""
    out = {}
    for number, task in enumerate(tasks, start=1):
        metrics = evaluate_splits(_TaskView(model, number), tokenizer, task.data, max_length)
        out[task.name] = {**task.teacher_summary,
                          **{split: headline(task.data, m) for split, m in metrics.items()}}
    return out


class _TaskView(nn.Module):
    """The multi-task student answering for one task, for code that calls model(**inputs)."""

    def __init__(self, model: MultiTaskStudent, task: int) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, **inputs: Any) -> Any:
        return self.model(task=self.task, **inputs)


def save_heads(model: MultiTaskStudent, tasks: list[AuxTask], path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for number, task in enumerate(tasks, start=1):
        head = model.heads[number]
        tensors[f"{task.name}.weight"] = head.weight.detach().contiguous()
        tensors[f"{task.name}.bias"] = head.bias.detach().contiguous()
    save_file(tensors, str(path))
