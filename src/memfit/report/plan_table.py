"""The plan as a table: chosen settings against the baseline and the alternatives."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from memfit.budget import format_bytes


def print_plan(
    plan,
    console: Console | None = None,
    measured_peak_bytes: int | None = None,
    alternatives: int = 8,
) -> None:
    console = console or Console()
    table = Table(
        title=f"{plan.workload} · batch {plan.batch_size} · {plan.optimizer} · "
        f"budget {plan.budget} · usable {format_bytes(plan.usable_bytes)}"
    )
    table.add_column("")
    table.add_column("settings")
    table.add_column("predicted peak", justify="right")
    table.add_column("time", justify="right")
    table.add_column("fits")
    table.add_column("exact")

    def row(label, cand, style=None):
        s = cand.settings
        table.add_row(
            label,
            s.label(),
            format_bytes(cand.predicted_peak_bytes),
            f"{100 * cand.predicted_time_overhead:+.0f}%",
            "yes" if cand.fits else "no",
            "yes" if s.exact else "no",
            style=style,
        )

    row("baseline", plan.baseline)
    row(
        "chosen" if plan.fits else "closest",
        plan.chosen,
        style="bold green" if plan.fits else "bold red",
    )
    shown = sorted(plan.alternatives, key=lambda c: (not c.fits, c.predicted_step_s))
    for cand in shown[:alternatives]:
        if cand is not plan.baseline:
            row("", cand, style="dim")
    console.print(table)
    s = plan.settings
    if plan.fits:
        console.print(
            f"[bold]plan:[/bold] {', '.join(plan.techniques) or 'nothing needed'}; "
            f"micro-batch {s.micro_batch_size} x {s.accumulation_steps} steps"
            + (f"; checkpoint {', '.join(s.checkpointed)}" if s.checkpointed else "")
        )
    if plan.bytes_per_parameter:
        console.print(
            f"model states: {plan.bytes_per_parameter:.1f} bytes per parameter at the peak "
            "(parameters, gradients and optimizer state)"
        )
    for note in plan.notes:
        console.print(f"- {note}")
    if measured_peak_bytes is not None:
        ok = plan.room.within(measured_peak_bytes)
        console.print(
            f"measured peak over 3 real steps: {format_bytes(measured_peak_bytes)} "
            f"(predicted {format_bytes(plan.predicted_peak_bytes)}): "
            + ("[green]inside the budget[/green]" if ok else "[red]over budget[/red]")
        )
