"""Terminal output of `memfit shrink` and `memfit convert`: a progress bar and a size table."""

from __future__ import annotations

import sys
from collections.abc import Callable

from memfit.budget import format_bytes
from memfit.cli._common import print_json


def run_with_progress(job: Callable, quiet: bool, label: str):
    """Run `job(progress_callback)` with a rich bar of input bytes read, on stderr.

    No bar with --json or when stderr is not a terminal (logs stay clean).
    """
    if quiet or not sys.stderr.isatty():
        return job(None)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return job(update)


def print_report(result, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.source}: {result.rows:,} rows")
    for name in ("column", "old dtype", "new dtype", "before", "after"):
        table.add_column(name, justify="right" if name in ("before", "after") else "left")
    for c in result.columns:
        table.add_row(
            str(c.name),
            c.old_dtype,
            c.new_dtype,
            format_bytes(c.before_bytes),
            format_bytes(c.after_bytes),
        )
    console = Console()
    console.print(table)
    ratio = result.before_bytes / max(result.after_bytes, 1)
    console.print(
        f"in memory with pandas: {format_bytes(result.before_bytes)} -> "
        f"{format_bytes(result.after_bytes)} ({ratio:.1f}x smaller)"
    )
    if result.destination:
        console.print(
            f"wrote {result.destination} ({format_bytes(result.output_file_bytes)}, "
            f"input file {format_bytes(result.input_file_bytes)})"
        )
