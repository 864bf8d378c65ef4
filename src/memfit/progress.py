"""Progress for long work, drawn on stderr and never mixed into what a command prints.

Every long operation (planning, verifying, compressing, converting, fitting) reports
through `task`; whether anything is drawn is decided in one place:

- shown when stderr is a terminal, unless `set_enabled(False)` was called (the command
  line does that for `--json`) or `MEMFIT_NO_PROGRESS` is set;
- `set_enabled(True)` forces it on (a notebook, or a test with its own console).

Tasks nest: a task opened while another is running is drawn as a second line of the
same display (rich allows one live display at a time).

    >>> with task("counting", total=3) as t:
    ...     for _ in range(3):
    ...         t.advance()
    >>> t.completed
    3.0
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_enabled: bool | None = None
_console: Any = None
_live: Any = None  # the rich Progress drawing every open task
_open_tasks = 0


def set_enabled(flag: bool | None, console: Any = None) -> None:
    """Force progress on (True) or off (False); None decides from the terminal again."""
    global _enabled, _console
    _enabled = flag
    _console = console


def enabled() -> bool:
    if _enabled is not None:
        return _enabled
    if os.environ.get("MEMFIT_NO_PROGRESS"):
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


@dataclass
class Task:
    """One line of progress: a description, how far it is, and out of how much."""

    description: str
    total: float | None = None
    completed: float = 0.0
    _id: Any = field(default=None, repr=False)

    def advance(self, amount: float = 1.0) -> None:
        self.completed += amount
        self._draw()

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        self._draw()

    def _draw(self) -> None:
        if _live is not None and self._id is not None:
            _live.update(
                self._id, completed=self.completed, total=self.total, description=self.description
            )


@contextmanager
def task(description: str, total: float | None = None) -> Iterator[Task]:
    """A progress line for the work inside the block (drawn only when progress is enabled)."""
    global _live, _open_tasks
    item = Task(description, total)
    if not enabled():
        yield item
        return
    started_here = _live is None
    if started_here:
        _live = _new_display()
        _live.start()
    _open_tasks += 1
    item._id = _live.add_task(description, total=total)
    try:
        yield item
    finally:
        _open_tasks -= 1
        if _live is not None:
            _live.remove_task(item._id)
            if started_here:
                _live.stop()
                _live = None


def _new_display():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = _console or Console(stderr=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
