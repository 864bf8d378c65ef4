"""The report's interactive charts, drawn with Bokeh (its JavaScript is inlined by `html`).

Bokeh rather than plotly: its core library is 1.3 MB against plotly's 4.8 MB, so a report
stays a file one can mail, and it has what these charts need (stacked areas and bars,
bands, hover). Every chart takes plain numbers (bytes), never a memfit object, so a
report drawn from saved JSON is the same as one drawn from a live result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from memfit.measure.timeline import CATEGORIES, Timeline
from memfit.report.chart import COLORS

PHASE_COLORS = {
    "forward": "#4c72b0",
    "backward": "#c44e52",
    "optimizer_step": "#55a868",
    "zero_grad": "#8c8c8c",
}
PHASE_LABELS = {
    "forward": "forward",
    "backward": "backward",
    "optimizer_step": "optimizer step",
    "zero_grad": "zero_grad",
}
_TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
_WIDTH = 960


def unit_for(max_bytes: float) -> tuple[str, float]:
    """The decimal unit a chart reads best in, as used by `format_bytes`: ("MB", 1e6)."""
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if max_bytes >= factor:
            return unit, factor
    return "B", 1.0


def _figure(**kwargs):
    from bokeh.plotting import figure

    fig = figure(
        width=kwargs.pop("width", _WIDTH),
        sizing_mode="stretch_width",
        height=kwargs.pop("height", 320),
        tools=kwargs.pop("tools", _TOOLS),
        toolbar_location="right",
        **kwargs,
    )
    fig.toolbar.logo = None
    fig.title.text_font_size = "13px"
    return fig


def _legend_outside(fig) -> None:
    from bokeh.models import Legend

    if fig.legend:
        items = fig.legend[0].items
        fig.legend[0].visible = False
        fig.add_layout(Legend(items=items, location="top_left"), "right")


def category_bars(
    bars: Sequence[tuple[str, Mapping[str, int]]],
    *,
    budget_bytes: int | None = None,
    usable_bytes: int | None = None,
    title: str = "Bytes by category at the peak",
):
    """One horizontal stacked bar per `(label, categories)`, with the budget as a line.

    A bar whose categories are not known is given as `{"total": bytes}`: drawn in grey.
    """
    from bokeh.models import ColumnDataSource, HoverTool

    labels = [label for label, _ in bars]
    totals = [sum(cats.values()) for _, cats in bars]
    unit, factor = unit_for(max([*totals, budget_bytes or 0, 1]))
    fig = _figure(
        y_range=list(reversed(labels)),
        height=70 + 46 * len(bars),
        title=title,
        x_axis_label=unit,
        tools="save",
    )
    data: dict[str, Any] = {"label": labels, "shown_total": [t / factor for t in totals]}
    for name in CATEGORIES:
        data[name] = [cats.get(name, 0) / factor for _, cats in bars]
    data["unknown"] = [cats.get("total", 0) / factor for _, cats in bars]
    source = ColumnDataSource(data)
    renderers = fig.hbar_stack(
        [*CATEGORIES, "unknown"],
        y="label",
        height=0.6,
        source=source,
        color=[COLORS[c] for c in CATEGORIES] + ["#bbbbbb"],
        legend_label=[*CATEGORIES, "not split"],
    )
    # Name only what is drawn: a bar with no split shows no category in the legend.
    used = [any(data[name]) for name in [*CATEGORIES, "unknown"]]
    fig.legend[0].items = [
        item for item, keep in zip(fig.legend[0].items, used, strict=True) if keep
    ]
    tips = [("", "@label"), ("total", f"@shown_total{{0,0.00}} {unit}")]
    tips += [(c, f"@{c}{{0,0.00}} {unit}") for c in CATEGORIES]
    fig.add_tools(HoverTool(renderers=renderers, tooltips=tips))
    # Budget named at the top, usable at the bottom: the two lines are often close.
    _limit_lines(
        fig,
        factor,
        "height",
        budget_bytes,
        usable_bytes,
        lambda name, at: (at, len(bars) - 0.45 if name == "budget" else 0.05, "left"),
    )
    fig.x_range.start = 0
    fig.x_range.end = max([*totals, budget_bytes or 0, usable_bytes or 0, 1]) / factor * 1.08
    fig.ygrid.visible = False
    _legend_outside(fig)
    return fig


def timeline_chart(
    timeline: Timeline,
    *,
    budget_bytes: int | None = None,
    usable_bytes: int | None = None,
    title: str = "Live memory over the step, by category",
):
    """Stacked areas of live bytes by category over operation order, phases as bands."""
    from bokeh.models import BoxAnnotation, ColumnDataSource, HoverTool, Span

    totals = timeline.totals
    unit, factor = unit_for(max([*totals, budget_bytes or 0, 1]))
    fig = _figure(
        height=380,
        title=title,
        x_axis_label="operation (in the order the step ran them)",
        y_axis_label=unit,
    )
    data: dict[str, Any] = {"op": timeline.ops, "total": [t / factor for t in totals]}
    data["phase"] = [PHASE_LABELS.get(name, name) for name in _phase_names(timeline)]
    data["module"] = [m or "(outside any module)" for m in timeline.modules]
    if timeline.categories:
        for name in CATEGORIES:
            data[name] = [v / factor for v in timeline.categories.get(name, [0] * len(totals))]
    source = ColumnDataSource(data)
    top = max([*totals, budget_bytes or 0, 1]) / factor * 1.08  # room for the phase names
    for name, first, last in timeline.phase_spans():
        if last > first:
            fig.add_layout(
                BoxAnnotation(
                    left=first,
                    right=last,
                    fill_color=PHASE_COLORS.get(name, "#dddddd"),
                    fill_alpha=0.1,
                    line_alpha=0,
                    level="underlay",
                )
            )
            # A phase too short to hold its name (zero_grad, often) is left to the hover.
            if (last - first) >= 0.06 * max(timeline.operations, 1):
                _label(fig, (first + last) / 2, top, PHASE_LABELS.get(name, name), align="center")
    if timeline.categories:
        fig.varea_stack(
            list(CATEGORIES),
            x="op",
            source=source,
            color=[COLORS[c] for c in CATEGORIES],
            legend_label=list(CATEGORIES),
            fill_alpha=0.85,
        )
    line = fig.line(
        "op", "total", source=source, color="#222222", line_width=1, legend_label="total"
    )
    tips = [
        ("operation", "@op"),
        ("phase", "@phase"),
        ("module", "@module"),
        ("total", f"@total{{0,0.00}} {unit}"),
    ]
    if timeline.categories:
        tips += [(c, f"@{c}{{0,0.00}} {unit}") for c in CATEGORIES]
    fig.add_tools(HoverTool(renderers=[line], tooltips=tips, mode="vline"))
    peak_i = timeline.peak_index
    if peak_i >= 0:
        peak_op, peak = timeline.ops[peak_i], totals[peak_i] / factor
        fig.add_layout(Span(location=peak_op, dimension="height", line_dash="dashed"))
        fig.scatter([peak_op], [peak], size=9, color="black", marker="diamond")
        right_half = peak_op > (timeline.ops[0] + timeline.ops[-1]) / 2
        text = f"peak {peak:,.2f} {unit}"
        _label(
            fig,
            peak_op,
            peak,
            f"{text} " if right_half else f" {text}",
            align="right" if right_half else "left",
        )
    first, last = (timeline.ops[0], timeline.ops[-1]) if timeline.ops else (0, 0)
    _horizontal_limits(fig, factor, budget_bytes, usable_bytes, first, last)
    fig.y_range.start = 0
    fig.y_range.end = top * 1.06
    _legend_outside(fig)
    return fig


def module_bars(rows: Sequence[Mapping[str, Any]], title: str = "Modules that hold the most"):
    """Horizontal stacked bars of each module's own parameters and saved activations."""
    from bokeh.models import ColumnDataSource, HoverTool

    names = [str(r["name"]) for r in rows]
    biggest = max([r["parameters"] + r["activations"] for r in rows] + [1])
    unit, factor = unit_for(biggest)
    source = ColumnDataSource(
        {
            "name": names,
            "type": [str(r.get("type", "")) for r in rows],
            "parameters": [r["parameters"] / factor for r in rows],
            "activations": [r["activations"] / factor for r in rows],
        }
    )
    fig = _figure(
        y_range=list(reversed(names)),
        height=80 + 24 * len(rows),
        title=title,
        x_axis_label=unit,
        tools="save",
    )
    renderers = fig.hbar_stack(
        ["parameters", "activations"],
        y="name",
        height=0.7,
        source=source,
        color=[COLORS["parameters"], COLORS["activations"]],
        legend_label=["own parameters", "activations saved for backward"],
    )
    fig.add_tools(
        HoverTool(
            renderers=renderers,
            tooltips=[
                ("module", "@name (@type)"),
                ("parameters", f"@parameters{{0,0.00}} {unit}"),
                ("activations", f"@activations{{0,0.00}} {unit}"),
            ],
        )
    )
    fig.x_range.start = 0
    fig.ygrid.visible = False
    _legend_outside(fig)
    return fig


def alternatives_chart(
    alternatives: Sequence[Mapping[str, Any]],
    *,
    chosen: Mapping[str, Any] | None,
    budget_bytes: int | None,
    usable_bytes: int | None,
):
    """Each combination the planner considered: predicted peak against predicted time cost."""
    from bokeh.models import ColumnDataSource, HoverTool

    peaks = [a["predicted_peak_bytes"] for a in alternatives]
    unit, factor = unit_for(max([*peaks, budget_bytes or 0, 1]))
    fig = _figure(
        height=360,
        title="Combinations considered: memory against time",
        x_axis_label="predicted time change (%)",
        y_axis_label=f"predicted peak ({unit})",
        tools="pan,wheel_zoom,box_zoom,reset,save",
    )
    groups = {
        "fits, exact": lambda a: a["fits"] and a.get("exact", True),
        "fits, lossy": lambda a: a["fits"] and not a.get("exact", True),
        "does not fit": lambda a: not a["fits"],
    }
    colors = {"fits, exact": "#2e7d32", "fits, lossy": "#ef8f00", "does not fit": "#9e9e9e"}
    renderers = []
    for name, test in groups.items():
        picked = [a for a in alternatives if test(a)]
        if not picked:
            continue
        source = ColumnDataSource(
            {
                "x": [100 * a["predicted_time_overhead"] for a in picked],
                "y": [a["predicted_peak_bytes"] / factor for a in picked],
                "label": [str(a.get("label", "")) for a in picked],
            }
        )
        renderers.append(
            fig.scatter("x", "y", source=source, size=9, color=colors[name], legend_label=name)
        )
    if chosen is not None:
        renderers.append(
            fig.scatter(
                [100 * chosen["predicted_time_overhead"]],
                [chosen["predicted_peak_bytes"] / factor],
                size=18,
                marker="star",
                color="black",
                legend_label="the plan",
            )
        )
    fig.add_tools(
        HoverTool(
            renderers=renderers,
            tooltips=[("", "@label"), ("peak", f"@y{{0,0.00}} {unit}"), ("time", "@x{+0.0}%")],
        )
    )
    left = min([0.0, *(100 * a["predicted_time_overhead"] for a in alternatives)])
    right = max([0.0, *(100 * a["predicted_time_overhead"] for a in alternatives)])
    _horizontal_limits(fig, factor, budget_bytes, usable_bytes, left, right)
    fig.y_range.start = 0
    fig.y_range.end = max([*peaks, budget_bytes or 0, 1]) / factor * 1.1
    _legend_outside(fig)
    return fig


def _limit_lines(fig, factor: float, dimension: str, budget_bytes, usable_bytes, place) -> None:
    """The budget (dashed) and usable (dotted) lines, each named where `place(name, at)` says."""
    from bokeh.models import Span

    for value, dash, name in (
        (budget_bytes, "dashed", "budget"),
        (usable_bytes, "dotted", "usable"),
    ):
        if value:
            at = value / factor
            fig.add_layout(Span(location=at, dimension=dimension, line_dash=dash, line_width=2))
            x, y, align = place(name, at)
            _label(fig, x, y, f" {name} ", align=align)


def _horizontal_limits(fig, factor: float, budget_bytes, usable_bytes, left, right) -> None:
    """Budget and usable across the chart, named at opposite ends: they are often close."""
    _limit_lines(
        fig,
        factor,
        "width",
        budget_bytes,
        usable_bytes,
        lambda name, at: (left, at, "left") if name == "budget" else (right, at, "right"),
    )


def _phase_names(timeline: Timeline) -> list[str]:
    from memfit.measure.timeline import PHASES

    return [PHASES[p] if 0 <= p < len(PHASES) else "other" for p in timeline.phases]


def _label(fig, x, y, text: str, align: str = "left") -> None:
    from bokeh.models import Label

    fig.add_layout(
        Label(x=x, y=y, text=text, text_align=align, text_font_size="11px", text_baseline="bottom")
    )
