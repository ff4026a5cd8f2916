"""Quantize stage: int8 of the student (and fp16 for GPU targets when asked), gated on the
task's primary metric; the task kind (kdedge.tasks) says how (quantize/classifier.py,
quantize/generation.py)."""

from __future__ import annotations

from typing import Any

from kdedge import tasks
from kdedge.data.dataset import load_task


def run(ctx) -> dict[str, Any]:
    task = load_task(ctx.input("data"))
    return tasks.get(task.kind).quantize(ctx, task)
