"""Multi-task distillation, MKD (Liu et al. 2019, "MKD: a Multi-Task Knowledge Distillation
Approach for Pretrained Language Models").

One student encoder is shared by every task; each task has its own output layer. Training draws
whole batches from one task at a time (a task sampler decides which), so heads of different
widths, and classification and regression heads, never meet in a batch; each batch takes its
own task's losses (losses.PerTask). The run's data and teacher are the target task: its head is
the student's own, so after training the student is an ordinary classifier (or regressor) for
the target task and exports like any other. The teachers are in task_teachers.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdedge import tasks as task_kinds
from kdedge.data.dataset import TaskData, TaskSplit
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


class MultiTaskModel(nn.Module):
    """A model (the student, or the multi-task teacher) with an extra output layer per task.

    An auxiliary head replaces the model's final output layer (the last Linear producing its
    logits) and reads the same input, so everything below it is shared. Task 0 is the target:
    the model's own head, so `model` alone is the target task's model.
    """

    def __init__(self, model: nn.Module, num_labels: list[int]) -> None:
        super().__init__()
        self.student = model  # the name keeps the saved state's keys of earlier runs
        self.output_layer = output_layer(model)
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

    def view(self, task: int) -> nn.Module:
        """The model answering for one task, for code that calls model(**inputs)."""
        return _TaskView(self, task)


def output_layer(model: nn.Module) -> nn.Linear:
    """The last Linear whose width is the number of labels: the one that writes the logits."""
    num_labels = model.config.num_labels
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    if not layers:
        raise KdedgeError(f"Cannot find the output layer of the {type(model).__name__} model; "
                          "the multi-task recipe needs transformer or bilstm students and teachers.")
    return layers[-1]


@dataclass
class AuxTask:
    """Another task of the run: its data, and its teacher's logits on its training rows."""

    name: str
    data: TaskData
    data_fingerprint: str
    teacher_logits: torch.Tensor | None = None  # on data.splits["train"], once a teacher gave them
    teacher_summary: dict[str, Any] = field(default_factory=dict)


def check_kind(name: str, data: TaskData) -> None:
    """Refuse a task whose kind has no multi-task recipe (the heads are logits or a score)."""
    if "multi-task" not in task_kinds.get(data.kind).recipes:
        fits = [k for k in task_kinds.names() if "multi-task" in task_kinds.get(k).recipes]
        raise KdedgeError(f"Task {name!r} is a {data.kind} task, and multi-task distillation "
                          f"takes {' and '.join(fits)} tasks only; drop it.")


def joint_split(splits: list[TaskSplit]) -> tuple[TaskSplit, list[int], list[int]]:
    """Every task's training rows in one split with task ids, the target's first; (split,
    offsets, sizes). Mixed kinds share one label array (float64 holds class ids and scores
    exactly); each task's losses read the labels in their own form."""
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


def mean_validation_score(model: MultiTaskModel, tasks: list[TaskData], tokenizer: Any,
                          max_length: int) -> float:
    """What a joint phase keeps its best epoch by: every task's primary metric (each its own:
    accuracy, Pearson, ...) counts, through its own head; the target is tasks[0]."""
    return float(np.mean([validation_score(model.view(number), tokenizer, data, max_length)
                          for number, data in enumerate(tasks)]))


def evaluate_tasks(model: MultiTaskModel, tokenizer: Any, tasks: list[AuxTask], max_length: int,
                   ) -> dict[str, Any]:
    """Each other task's validation and test metrics through its own head."""
    out = {}
    for number, task in enumerate(tasks, start=1):
        metrics = evaluate_splits(model.view(number), tokenizer, task.data, max_length)
        out[task.name] = {**task.teacher_summary,
                          **{split: headline(task.data, m) for split, m in metrics.items()}}
    return out


class _TaskView(nn.Module):
    """A multi-task model answering for one task, for code that calls model(**inputs)."""

    def __init__(self, model: MultiTaskModel, task: int) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, **inputs: Any) -> Any:
        return self.model(task=self.task, **inputs)


def save_heads(model: MultiTaskModel, tasks: list[AuxTask], path: Path) -> None:
    """The other tasks' heads as safetensors, "<task>.weight" and "<task>.bias"; the metadata
    gives each task's kind."""
    from safetensors.torch import save_file

    tensors = {}
    for number, task in enumerate(tasks, start=1):
        head = model.heads[number]
        tensors[f"{task.name}.weight"] = head.weight.detach().contiguous()
        tensors[f"{task.name}.bias"] = head.bias.detach().contiguous()
    save_file(tensors, str(path), metadata={task.name: task.data.kind for task in tasks})


def load_heads(model: MultiTaskModel, tasks: list[AuxTask], path: Path) -> None:
    """The heads save_heads wrote, into `model`'s heads for the same tasks."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    for number, task in enumerate(tasks, start=1):
        model.heads[number].load_state_dict({"weight": tensors[f"{task.name}.weight"],
                                             "bias": tensors[f"{task.name}.bias"]})
