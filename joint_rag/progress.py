"""Progress bars for long passes (corpus encoding): a rich bar on a terminal, a plain line every
tenth of the way otherwise (log files, CI), nothing with ``enabled=False`` or JRAG_PROGRESS=0."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def progress_enabled() -> bool:
    return os.environ.get("JRAG_PROGRESS", "1") != "0"


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Context manager yielding ``advance(n)``."""
    if not (enabled and progress_enabled()) or total <= 0:
        yield lambda n=1: None
        return
    if not sys.stdout.isatty():
        yield _plain_lines(description, total)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def _plain_lines(description: str, total: int) -> Callable[[int], None]:
    t0, done, next_mark = time.perf_counter(), 0, 0.1

    def advance(n: int = 1) -> None:
        nonlocal done, next_mark
        done += n
        if done / total >= next_mark or done >= total:
            print(f"[{description}] {done}/{total} ({time.perf_counter() - t0:.0f} s)", flush=True)
            while next_mark <= done / total:
                next_mark += 0.1

    return advance
