"""Terminal output of `memfit shrink` and `memfit convert`: a size table (progress is drawn by
`memfit.progress` while the conversion runs)."""

from __future__ import annotations

from memfit.budget import format_bytes
from memfit.cli._common import print_json


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
            f"input file {format_bytes(result.input_file_bytes)}, {result.compression}, "
            f"{result.row_groups} row groups, {result.seconds:.1f} s)"
        )
