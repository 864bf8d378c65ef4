"""The demo: where a training step's memory goes for a ResNet and a Transformer."""

from __future__ import annotations

from rich.columns import Columns
from rich.console import Console

from memfit import zoo
from memfit.measure.profile import profile
from memfit.report.chart import plot_profiles
from memfit.report.text import category_table


def run_demo(plot_path: str = "memfit-demo.png", console: Console | None = None) -> int:
    console = console or Console()
    console.rule("[bold]memfit demo: where does a training step's memory go?")
    cases = [("resnet18", 64, "ResNet-18, CIFAR 32x32, batch 64"),
             ("transformer", 8, "GPT decoder 6x512, seq 256, batch 8")]
    profiles = []
    for name, batch, label in cases:
        console.print(f"measuring {label} ...")
        profiles.append((label, profile(zoo.get(name), batch, "adam")))
    console.print(Columns([category_table(p, title=label) for label, p in profiles]))
    for label, p in profiles:
        biggest = max(p.categories, key=p.categories.get)
        console.print(f"{label}: peak in the {p.peak_phase} pass; the largest share is "
                      f"[bold]{biggest}[/bold].")
    plot_profiles([p for _, p in profiles], plot_path, labels=[lbl.split(",")[0]
                                                              for lbl, _ in profiles])
    console.print(f"chart written to {plot_path}")
    return 0
