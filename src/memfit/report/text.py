"""Rich tables for profiles: categories first, then the modules that hold the most."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from memfit.budget import format_bytes
from memfit.memory_profile import CATEGORIES, MemoryProfile


def category_table(profile: MemoryProfile, title: str | None = None) -> Table:
    method = "measured" if profile.method == "measured" else "estimated"
    table = Table(
        title=title
        or f"{profile.workload} · batch {profile.batch_size} · "
        f"{profile.optimizer} · {profile.precision} ({method})"
    )
    table.add_column("category")
    table.add_column("bytes at peak", justify="right")
    table.add_column("share", justify="right")
    peak = max(profile.peak_bytes, 1)
    for name in CATEGORIES:
        value = profile.categories.get(name, 0)
        table.add_row(name, format_bytes(value), f"{100 * value / peak:.1f}%")
    table.add_section()
    table.add_row(
        f"peak ({profile.peak_phase})", format_bytes(profile.peak_bytes), "100%", style="bold"
    )
    if profile.process_step_bytes is not None:
        label = "process peak (RSS)" if profile.device == "cpu" else "allocator peak"
        table.add_row(label, format_bytes(profile.process_step_bytes), "", style="dim")
    return table


def module_table(profile: MemoryProfile, top: int = 10) -> Table:
    table = Table(title=f"top {top} modules")
    table.add_column("module")
    table.add_column("type")
    table.add_column("parameters", justify="right")
    table.add_column("activations", justify="right")
    for row in profile.top_modules(top):
        table.add_row(
            row.name, row.type, format_bytes(row.parameters), format_bytes(row.activations)
        )
    return table


def print_profile(profile: MemoryProfile, console: Console | None = None, top: int = 10) -> None:
    console = console or Console()
    console.print(category_table(profile))
    console.print(module_table(profile, top))
