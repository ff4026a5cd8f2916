"""The task kinds: one module each, listed here (no registration by a side-effect import).

A stage finds its task's kind with `get(task.kind)` and calls it; see base.TaskKind for what a
kind owns, and docs/architecture.md for adding one.
"""

from __future__ import annotations

from typing import Any

from kdedge.registry import Registry
from kdedge.tasks import causal_lm, classification, embedding, regression, seq2seq
from kdedge.tasks.base import TaskKind

KINDS: Registry[TaskKind] = Registry("task kind")
for _module in (classification, regression, seq2seq, causal_lm, embedding):
    KINDS.register(_module.KIND.name)(_module.KIND)

AUTO = "auto"  # data.task: classification or regression, read off the labels


def get(name: str) -> TaskKind:
    return KINDS.get(name)


def names() -> list[str]:
    return KINDS.names()


def declared(name: str | None) -> TaskKind:
    """The kind data.task names before any data is read; "auto" (or none) gives classification's,
    which regression shares: labels, students, recipes and demo."""
    return get(classification.KIND.name if name in (None, AUTO) else name)


def demo_preset(name: str | None) -> dict[str, Any]:
    """The config the built-in demo of data.task `name` runs with."""
    return dict(declared(name).demo_preset)


def reads_labels(name: str) -> bool:
    """Whether data.task `name` reads a label column."""
    return declared(name).labelled


def resolve(name: str, labels: Any) -> str:
    """data.task, with "auto" read off the labels: numbers with fractions are scores."""
    if name != AUTO:
        return name
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    fractional = numeric and bool((labels != labels.round()).any())
    return regression.KIND.name if fractional else classification.KIND.name
