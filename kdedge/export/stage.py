"""Export stage: teacher and student to ONNX, checked against PyTorch; the task kind
(kdedge.tasks) says how (export/classifier.py, export/generation.py)."""

from __future__ import annotations

from typing import Any

from kdedge import tasks
from kdedge.data.dataset import load_task


def run(ctx) -> dict[str, Any]:
    task = load_task(ctx.input("data"))
    return tasks.get(task.kind).export(ctx, task)
