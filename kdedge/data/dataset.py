"""The data stage's output as later stages read it: texts, labels and the task's kind.

Classification labels are int64 ids into the label names; regression labels are float32
scores under the single label name "score"; generation labels are target texts. The kind
(kdedge.tasks) says which.

Paired views (data.teacher_text_column): every row also holds the teacher's view of it (the
clean text beside a noisy or transcribed one). This module is the one place that says which
view each model reads: `TaskSplit.texts` is the student's (and every shipped model's),
`TaskSplit.teacher_view` the teacher's, and `TaskData.view("teacher")` gives the teacher's
stages a TaskData whose texts are its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdedge import tasks
from kdedge.artifacts import read_json

SPLITS = ("train", "validation", "test")
LABELS_FILE = "labels.json"
UNUSED_FILE = "unused.parquet"  # train rows cut by max_train_samples, labels dropped
TEACHER_TEXT = "teacher_text"  # the splits' column of the teacher's view, under paired views
READERS = ("teacher", "student")  # who reads a view


def split_file(stage_dir: Path, split: str) -> Path:
    return stage_dir / f"{split}.parquet"


@dataclass(frozen=True)
class TaskSplit:
    texts: list[Any]  # str, or (text, text_pair) tuples for sentence-pair tasks
    labels: np.ndarray  # int64 label ids, float32 scores for regression, target texts (object)
    # for generation
    task_ids: np.ndarray | None = None  # multi-task training: the task of every row
    teacher_texts: list[Any] | None = None  # paired views: what the teacher reads of each row
    # (its data.teacher_text_column, with the row's text_pair); None: the teacher reads `texts`

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def teacher_view(self) -> list[Any]:
        """The texts the teacher reads, row for row with `texts` (the student's)."""
        return self.texts if self.teacher_texts is None else self.teacher_texts

    def as_teacher(self) -> TaskSplit:
        """This split as the teacher reads it: its view in `texts`."""
        return TaskSplit(self.teacher_view, self.labels, self.task_ids)


@dataclass(frozen=True)
class TaskData:
    labels: list[str]  # label names, index = label id; ["score"] for regression
    splits: dict[str, TaskSplit]
    kind: str = "classification"  # a name in kdedge.tasks
    views: dict[str, str] | None = None  # paired views: {"teacher": column, "student": column}
    primary: str | None = None  # the metric the run judges by, when the data stage chose one
    # other than the kind's first (macro-F1 for heavily imbalanced classes: data/checks.py)

    def view(self, reader: str) -> TaskData:
        """The task as `reader` ("teacher" or "student") reads it: its texts in every split's
        `texts`. The student's view is the data itself; it is what every shipped model reads."""
        if reader not in READERS:
            raise ValueError(f"unknown reader {reader!r}; one of {READERS}")
        if reader == "student":
            return self
        return TaskData(self.labels, {name: split.as_teacher() for name, split in self.splits.items()},
                        self.kind, self.views, self.primary)

    @property
    def is_regression(self) -> bool:
        """One float output per text, not a class (the labelled kinds share their models)."""
        return self.kind == "regression"

    @property
    def length_buckets(self) -> bool:
        """The kind's choice of training batches of similar lengths (TaskKind.length_buckets)."""
        return tasks.get(self.kind).length_buckets

    @property
    def metrics(self) -> tuple[str, ...]:
        """The kind's headline metrics; the first is the primary one."""
        return tasks.get(self.kind).metrics

    @property
    def primary_metric(self) -> str:
        return self.primary or self.metrics[0]

    @property
    def num_labels(self) -> int:
        """Model outputs: one per class, or the one score of a regression task."""
        return 1 if self.is_regression else len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))


def load_task(stage_dir: Path) -> TaskData:
    import pandas as pd

    meta = read_json(stage_dir / LABELS_FILE)
    kind = meta.get("task", "classification")
    dtype = tasks.get(kind).label_dtype
    splits = {}
    for name in SPLITS:
        table = pd.read_parquet(split_file(stage_dir, name))
        teacher = _texts(table, TEACHER_TEXT) if TEACHER_TEXT in table.columns else None
        splits[name] = TaskSplit(_texts(table, "text"), table["label"].to_numpy(dtype=dtype),
                                 teacher_texts=teacher)
    return TaskData(meta["labels"], splits, kind, meta.get("views"), meta.get("primary_metric"))


def views(cfg: Any) -> dict[str, str] | None:
    """Which column each model reads under paired views (data.teacher_text_column), else None:
    what the data stage records in labels.json, its manifest and so the report."""
    if cfg.teacher_text_column is None:
        return None
    return {"teacher": cfg.teacher_text_column, "student": cfg.text_columns[0]}


def _texts(table: Any, column: str) -> list[Any]:
    """A column's texts, each with the row's text_pair for a sentence-pair task."""
    if "text_pair" in table.columns:
        return list(zip(table[column].tolist(), table["text_pair"].tolist(), strict=True))
    return table[column].tolist()


def load_unlabeled(stage_dir: Path, reader: str = "student") -> list[Any]:
    """The data stage's unlabelled pool (texts, or (text, pair) tuples) as `reader` reads it."""
    import pandas as pd

    path = stage_dir / UNUSED_FILE
    if not path.is_file():
        return []
    table = pd.read_parquet(path)
    teacher = reader == "teacher" and TEACHER_TEXT in table.columns
    return _texts(table, TEACHER_TEXT if teacher else "text")
