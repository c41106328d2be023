"""Rich progress bars that stay quiet in tests and non-interactive logs when asked."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_enabled() -> bool:
    return os.environ.get("JRAG_PROGRESS", "1") != "0"


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Context manager yielding ``advance(n)``; a no-op when disabled or JRAG_PROGRESS=0."""
    if not (enabled and progress_enabled()):
        yield lambda n=1: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
