"""Stacked-bar charts of where memory goes: one bar per profile, or before and after a plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from memfit.memory_profile import CATEGORIES, MemoryProfile

COLORS = {
    "parameters": "#4c72b0",
    "gradients": "#dd8452",
    "optimizer": "#55a868",
    "activations": "#c44e52",
    "other": "#8c8c8c",
}


def plot_profiles(
    profiles: Sequence[MemoryProfile],
    path: str | Path,
    labels: Sequence[str] | None = None,
    title: str = "Training memory at the peak",
    budget_bytes: int | None = None,
) -> Path:
    """Write a PNG with one stacked bar per profile (categories at the peak), in MB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels or [f"{p.workload}\nbatch {p.batch_size}" for p in profiles])
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * len(profiles) + 2), 4.5))
    bottoms = _stacked_bars(ax, labels, [p.categories for p in profiles])
    for x, total in enumerate(bottoms):
        ax.text(x, total, f"{total:,.1f} MB", ha="center", va="bottom", fontsize=9)
    if budget_bytes:
        ax.axhline(budget_bytes / 1e6, color="black", linestyle="--", linewidth=1)
        ax.text(
            len(profiles) - 0.5, budget_bytes / 1e6, " budget", va="bottom", ha="right", fontsize=9
        )
    ax.set_ylabel("MB at the step's peak")
    ax.set_title(title)
    return _finish(fig, ax, path, margin=0.12)


def plot_before_after(
    bars: Sequence[tuple[str, Mapping[str, int]]],
    path: str | Path,
    budget_bytes: int | None = None,
    title: str = "Training step memory: before and after the plan",
) -> Path:
    """Write a PNG with one stacked bar per `(label, categories)` pair, in MB.

    Unlike `plot_profiles` the bars need not come from `MemoryProfile`s: the "after" bar
    is usually a tracked run of the planned step, which has categories but no profile.
    A ratio to the first bar is printed over every later bar, so the saving reads at once.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _ in bars]
    fig, ax = plt.subplots(figsize=(max(4.5, 2.4 * len(bars) + 2.5), 4.8))
    bottoms = _stacked_bars(ax, labels, [cats for _, cats in bars])
    first = bottoms[0] if bottoms else 0.0
    for x, total in enumerate(bottoms):
        text = f"{total:,.2f} MB"
        if x and total > 0:
            text += f"\n({first / total:.1f}x less)"
        # A white box keeps the label legible where it crosses the budget line.
        ax.text(
            x,
            total,
            text,
            ha="center",
            va="bottom",
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )
    if budget_bytes:
        # Named in the legend, not beside the line: a small "after" bar sits right at it.
        ax.axhline(
            budget_bytes / 1e6,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"budget {budget_bytes / 1e6:,.2f} MB",
        )
    ax.set_ylabel("MB of live tensors at the step's peak")
    ax.set_title(title)
    return _finish(fig, ax, path, margin=0.15)


def _stacked_bars(
    ax, labels: Sequence[str], categories: Sequence[Mapping[str, int]]
) -> list[float]:
    """One bar per label, one segment per category in MB; returns each bar's total."""
    bottoms = [0.0] * len(labels)
    for name in CATEGORIES:
        values = [cats.get(name, 0) / 1e6 for cats in categories]
        ax.bar(labels, values, bottom=bottoms, color=COLORS[name], label=name, width=0.6)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    return bottoms


def _finish(fig, ax, path: str | Path, margin: float) -> Path:
    import matplotlib.pyplot as plt

    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.margins(y=margin)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
