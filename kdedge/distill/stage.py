"""Distill stage: train the student from the teacher with the configured recipe; the task kind
(kdedge.tasks) says how (distill/classifier.py, distill/generator.py)."""

from __future__ import annotations

from typing import Any

from kdedge import tasks
from kdedge.data.dataset import load_task
from kdedge.torch_utils import set_threads


def run(ctx) -> dict[str, Any]:
    set_threads(ctx.cfg.run.threads)
    task = load_task(ctx.input("data"))
    return tasks.get(task.kind).distill(ctx, task)
