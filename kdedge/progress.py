"""Progress bars on stderr (rich), so stdout stays clean for results."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kdedge.parallel import helper_process

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Progress]:
    """One bar; call `bar.advance(bar.task_ids[0])` or use `advance(bar, n, status)`."""
    bar = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, transient=False,
                   disable=helper_process())  # one bar per launched run
    bar.add_task(description, total=total, status="")
    with bar:
        yield bar


def advance(bar: Progress, steps: int = 1, status: str | None = None) -> None:
    task = bar.task_ids[0]
    if status is None:
        bar.advance(task, steps)
    else:
        bar.update(task, advance=steps, status=status)
