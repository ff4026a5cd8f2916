"""The data stage's output as later stages read it: texts, labels and the task's kind.

Classification labels are int64 ids into the label names; regression labels are float32
scores under the single label name "score"; generation labels are target texts. The kind
(kdedge.tasks) says which.
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


def split_file(stage_dir: Path, split: str) -> Path:
    return stage_dir / f"{split}.parquet"


@dataclass(frozen=True)
class TaskSplit:
    texts: list[Any]  # str, or (text, text_pair) tuples for sentence-pair tasks
    labels: np.ndarray  # int64 label ids, float32 scores for regression, target texts (object)
    # for generation
    task_ids: np.ndarray | None = None  # multi-task training: the task of every row

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TaskData:
    labels: list[str]  # label names, index = label id; ["score"] for regression
    splits: dict[str, TaskSplit]
    kind: str = "classification"  # a name in kdedge.tasks

    @property
    def is_regression(self) -> bool:
        """One float output per text, not a class (the labelled kinds share their models)."""
        return self.kind == "regression"

    @property
    def metrics(self) -> tuple[str, ...]:
        """The kind's headline metrics; the first is the primary one."""
        return tasks.get(self.kind).metrics

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

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
        if "text_pair" in table.columns:
            texts = list(zip(table["text"].tolist(), table["text_pair"].tolist(), strict=True))
        else:
            texts = table["text"].tolist()
        splits[name] = TaskSplit(texts, table["label"].to_numpy(dtype=dtype))
    return TaskData(meta["labels"], splits, kind)


def load_unlabeled(stage_dir: Path) -> list[Any]:
    """The data stage's unlabelled pool (texts, or (text, pair) tuples)."""
    import pandas as pd

    path = stage_dir / UNUSED_FILE
    if not path.is_file():
        return []
    table = pd.read_parquet(path)
    if "text_pair" in table.columns:
        return list(zip(table["text"].tolist(), table["text_pair"].tolist(), strict=True))
    return table["text"].tolist()
