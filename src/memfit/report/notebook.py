"""Results in Jupyter: HTML tables with a small chart, and the whole report inline.

`_repr_html_` must stay light, because a notebook saves it with every output cell: the
tables and one stacked bar drawn by matplotlib as SVG (a few kB, no script). `show`
draws the full interactive report in a frame, for when a look at the timeline is wanted.

    >>> from memfit.memory_profile import MemoryProfile
    >>> cats = {"parameters": 4, "gradients": 4, "optimizer": 8, "activations": 3, "other": 1}
    >>> page = profile_repr_html(MemoryProfile("estimated", "cpu", 2, 20, cats, "backward", {}, []))
    >>> "<svg" in page and "activations" in page
    True
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from memfit.budget import format_bytes
from memfit.measure.timeline import CATEGORIES
from memfit.report.chart import COLORS


def profile_repr_html(profile) -> str:
    """A profile or an estimate as a notebook shows it: the categories, a bar, the top modules."""
    data = profile.to_dict()
    peak = max(data["peak_bytes"], 1)
    title = (
        f"{data.get('workload') or 'model'} · batch {data['batch_size']} · {data['optimizer']} · "
        f"{data['precision']} ({data['method']}): peak {format_bytes(data['peak_bytes'])} "
        f"in {data['peak_phase']}"
    )
    rows = [
        (
            _swatch(c) + c,
            format_bytes(data["categories"][c]),
            f"{100 * data['categories'][c] / peak:.1f}%",
        )
        for c in CATEGORIES
    ]
    modules = [
        (
            html.escape(m.name),
            html.escape(m.type),
            format_bytes(m.parameters),
            format_bytes(m.activations),
        )
        for m in profile.top_modules(5)
    ]
    return _frame(
        title,
        _svg_bar([("at the peak", data["categories"])]),
        _table(("category", "bytes", "share"), rows),
        _table(("module", "type", "parameters", "activations"), modules) if modules else "",
    )


def plan_repr_html(plan: Mapping[str, Any]) -> str:
    """A plan's dictionary (`Plan.to_dict()`) as a notebook shows it.

    >>> page = plan_repr_html({"budget_bytes": 100, "fits": True, "baseline_peak_bytes": 300,
    ...     "predicted_peak_bytes": 90, "micro_batch_size": 4, "accumulation_steps": 4,
    ...     "techniques": ["micro-batching"], "predicted_time_overhead": 0.2})
    >>> "fits" in page and "micro-batching" in page
    True
    """
    verdict = "fits" if plan.get("fits") else "does not fit"
    title = (
        f"{plan.get('workload') or 'model'}: plan for {format_bytes(plan['budget_bytes'])} "
        f"({verdict})"
    )
    rows = [
        ("baseline peak", format_bytes(plan["baseline_peak_bytes"])),
        ("planned peak", format_bytes(plan["predicted_peak_bytes"])),
        ("time", f"{100 * plan.get('predicted_time_overhead', 0):+.0f}%"),
        ("techniques", html.escape(", ".join(plan.get("techniques") or []) or "none")),
        ("micro-batch", f"{plan.get('micro_batch_size')} x {plan.get('accumulation_steps')}"),
    ]
    if plan.get("measured_peak_bytes") is not None:
        rows.insert(2, ("measured peak", format_bytes(plan["measured_peak_bytes"])))
    bars = [
        ("baseline", plan.get("baseline_categories") or {"total": plan["baseline_peak_bytes"]}),
        ("plan", plan.get("predicted_categories") or {"total": plan["predicted_peak_bytes"]}),
    ]
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in plan.get("notes", []))
    return _frame(
        title,
        _svg_bar(bars, budget_bytes=plan["budget_bytes"]),
        _table(("", ""), rows),
        f"<ul>{notes}</ul>" if notes else "",
    )


def show(result: Any, **kwargs: Any):
    """Draw the full report of `result` (a profile, an estimate, a plan) in a notebook.

    Outside a notebook there is nowhere to draw: write a file with `write_report` instead.
    """
    from memfit.errors import ReportError
    from memfit.report.html import report_html

    try:
        from IPython import display as display_module
    except ImportError:
        raise ReportError(
            "memfit.show draws in a Jupyter notebook (IPython is not installed here); "
            "write a file instead: memfit.report.html.write_report(result, 'report.html')"
        ) from None
    page = report_html(result, **kwargs)
    # A frame of its own: the report's styles and scripts cannot touch the notebook's.
    frame = (
        f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:900px;'
        'border:1px solid #ddd" sandbox="allow-scripts allow-downloads"></iframe>'
    )
    return display_module.display(display_module.HTML(frame))


def _svg_bar(bars: Sequence[tuple[str, Mapping[str, int]]], budget_bytes: int | None = None) -> str:
    """Horizontal stacked bars as inline SVG (text kept as text: small and crisp)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = [sum(cats.values()) for _, cats in bars]
    biggest = max([*totals, budget_bytes or 0, 1])
    unit, factor = next(
        ((u, f) for u, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)) if biggest >= f), ("B", 1.0)
    )
    with plt.rc_context({"svg.fonttype": "none", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.42 * len(bars)))
        labels = [label for label, _ in reversed(bars)]
        left = [0.0] * len(bars)
        for name in [*CATEGORIES, "total"]:
            widths = [cats.get(name, 0) / factor for _, cats in reversed(bars)]
            if any(widths):
                color = COLORS.get(name, "#bbbbbb")
                ax.barh(labels, widths, left=left, color=color, label=name, height=0.6)
                left = [a + b for a, b in zip(left, widths, strict=True)]
        if budget_bytes:
            ax.axvline(budget_bytes / factor, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel(unit)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.1), frameon=False, fontsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        fig.tight_layout()
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})  # same result, same SVG
        plt.close(fig)
    svg = out.getvalue()
    return svg[svg.index("<svg") :]


def _swatch(category: str) -> str:
    return (
        f"<span style='display:inline-block;width:9px;height:9px;margin-right:5px;"
        f"background:{COLORS[category]}'></span>"
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = "".join(
        "<tr>" + "".join(f"<td style='text-align:right'>{v}</td>" for v in row) + "</tr>"
        for row in rows
    )
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><thead><tr>{heads}</tr></thead><tbody>{cells}</tbody></table>"


def _frame(title: str, *parts: str) -> str:
    return (
        f"<div class='memfit'><p><b>{html.escape(title)}</b></p>"
        + "".join(parts)
        + "<p style='color:#888;font-size:11px'>memfit.show(result) draws the full report "
        "with the timeline</p></div>"
    )
