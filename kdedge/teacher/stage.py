"""Teacher stage: load the teacher, or fine-tune it for the task; what that means is the task
kind's (kdedge.tasks), and a fine-tuned teacher is cached by fingerprint (teacher/cache.py).
The teacher is fine-tuned and scored on its own view of the texts (paired views: its column)."""

from __future__ import annotations

from typing import Any

from kdedge import tasks
from kdedge.data.dataset import load_task
from kdedge.torch_utils import set_threads


def run(ctx) -> dict[str, Any]:
    task = load_task(ctx.input("data"))
    set_threads(ctx.cfg.run.threads)
    return tasks.get(task.kind).teacher(ctx, task.view("teacher"))
