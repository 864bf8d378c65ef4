"""One self-contained HTML file that shows where a step's memory goes, or what a plan does.

Everything the page needs is inside it (Bokeh's JavaScript, the data, the styles), so it
opens with no network; it weighs 1.3 to 1.6 MB (Bokeh's 1.3 MB and the data). Tables carry
every number, so the page reads even where scripts are blocked (a mail preview).

Inputs are the JSON dictionaries the command line prints (`memfit profile/estimate/plan
--json`), or the live objects: a `MemoryProfile`, or anything with `to_dict()` that gives
a plan's dictionary.

    >>> from memfit.memory_profile import MemoryProfile
    >>> cats = {"parameters": 40, "gradients": 40, "optimizer": 80, "activations": 30, "other": 10}
    >>> p = MemoryProfile("estimated", "cpu", 8, 200, cats, "backward", {}, [], workload="tiny")
    >>> page = profile_html(p)
    >>> page.startswith("<!DOCTYPE html>") and "tiny" in page and "backward" in page
    True
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memfit.budget import format_bytes
from memfit.errors import ReportError
from memfit.measure.timeline import CATEGORIES, Timeline
from memfit.memory_profile import MemoryProfile
from memfit.report.chart import COLORS
from memfit.report.saved import PLAN_KEYS, PROFILE_KEYS, result_kind


# ---- public ------------------------------------------------------------------------------------
def profile_html(
    profile: MemoryProfile | Mapping[str, Any],
    *,
    verdict: Mapping[str, Any] | None = None,
    top: int = 10,
) -> str:
    """The report for a profile or an estimate; `verdict` adds the budget (estimate --budget)."""
    data = _profile_dict(profile)
    verdict = verdict or ({k: data[k] for k in _VERDICT_KEYS if k in data} or None)
    page = _Page(_profile_title(data), _profile_subtitle(data))
    page.cards(_profile_cards(data, verdict))
    budget = verdict.get("budget_bytes") if verdict else None
    page.section(
        "At the peak",
        _figure_of(
            "category_bars",
            [(f"peak ({_phase(data.get('peak_phase', ''))})", data["categories"])],
            budget_bytes=budget,
        ),
        _category_table(data),
        intro=_peak_sentence(data),
    )
    timeline = Timeline.from_dict(data.get("timeline"))
    page.section("Over the step", *_timeline_parts(timeline, data, budget, None))
    rows = sorted(
        data.get("modules", []), key=lambda r: r["parameters"] + r["activations"], reverse=True
    )[: max(top, 0)]
    if rows:
        page.section(
            "Modules that hold the most",
            _figure_of("module_bars", rows),
            _module_table(rows),
            intro="Each module's own parameters (not its children's) and the activations it "
            "saved for backward.",
        )
    return page.render()


def plan_html(
    plan: Mapping[str, Any] | Any,
    *,
    baseline: MemoryProfile | Mapping[str, Any] | None = None,
) -> str:
    """The report for a plan (`Plan.to_dict()` or `memfit plan --json`).

    `baseline` (the unplanned step's profile or estimate) adds where its memory goes and
    its timeline. Optional keys used when present: `baseline_categories`,
    `predicted_categories`, `measured_peak_bytes`, `measured_categories`.
    """
    data = _plan_dict(plan)
    base = _profile_dict(baseline) if baseline is not None else None
    page = _Page(_plan_title(data), _plan_subtitle(data))
    page.cards(_plan_cards(data))
    budget, usable = data.get("budget_bytes"), data.get("usable_bytes")
    page.section(
        "Baseline against the plan",
        _figure_of(
            "category_bars",
            _plan_bars(data, base),
            budget_bytes=budget,
            usable_bytes=usable,
            title="Predicted peak of one training step",
        ),
        _plan_settings_table(data),
        intro=_plan_sentence(data),
    )
    if data.get("measured_peak_bytes") is not None:
        page.section("Predicted against measured", _verify_table(data))
    alternatives = list(data.get("alternatives", []))
    if alternatives:
        page.section(
            "Alternatives considered",
            _figure_of(
                "alternatives_chart",
                alternatives,
                chosen=data,
                budget_bytes=budget,
                usable_bytes=usable,
            ),
            _alternatives_table(
                [{**data, "label": "the plan: " + settings_label(data)}, *alternatives]
            ),
            intro="Every combination the planner predicted. The plan is the fastest one that "
            "fits; exact techniques are preferred to lossy ones.",
        )
    notes = list(data.get("notes", []))
    if notes:
        page.section("Notes", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    if base is not None:
        timeline = Timeline.from_dict(base.get("timeline"))
        page.section("The baseline step", *_timeline_parts(timeline, base, budget, usable))
    return page.render()


def report_html(result: Any, **kwargs: Any) -> str:
    """The report for any result: a MemoryProfile, a Plan, or their JSON dictionaries."""
    if isinstance(result, MemoryProfile):
        return profile_html(result, **kwargs)
    data = result.to_dict() if hasattr(result, "to_dict") else result
    if not isinstance(data, Mapping):
        raise ReportError(
            f"cannot draw a report of a {type(result).__name__}: give a profile, an estimate "
            "or a plan (or their saved --json output)"
        )
    if result_kind(dict(data)) == "plan":
        return plan_html(data, **kwargs)
    return profile_html(data, **kwargs)


def write_report(result: Any, path: str | Path, **kwargs: Any) -> Path:
    """Write `report_html(result)` to `path` (parent folders must exist); returns the path."""
    return _write(report_html(result, **kwargs), path)


def write_plan_report(
    plan: Mapping[str, Any] | Any,
    path: str | Path,
    *,
    baseline: MemoryProfile | Mapping[str, Any] | None = None,
) -> Path:
    """Write `plan_html(plan, baseline=...)` to `path`."""
    return _write(plan_html(plan, baseline=baseline), path)


# ---- inputs ------------------------------------------------------------------------------------
_VERDICT_KEYS = (
    "budget_bytes",
    "fits",
    "need_bytes",
    "reserve_bytes",
    "shortfall_bytes",
    "max_batch_size",
    "max_batch_size_pow2",
    "fits_preset",
)


def _profile_dict(profile: MemoryProfile | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(profile, MemoryProfile):
        return profile.to_dict(timeline=True)
    data = dict(profile)
    missing = [k for k in PROFILE_KEYS if k not in data]
    if missing:
        raise ReportError(
            f"not a profile or an estimate: no {', '.join(missing)} (give the output of "
            "`memfit profile --json` or `memfit estimate --json`)"
        )
    data["categories"] = {c: int(data["categories"].get(c, 0)) for c in CATEGORIES}
    return data


def _plan_dict(plan: Mapping[str, Any] | Any) -> dict[str, Any]:
    data = dict(plan.to_dict() if hasattr(plan, "to_dict") else plan)
    missing = [k for k in PLAN_KEYS if k not in data]
    if missing:
        raise ReportError(
            f"not a plan: no {', '.join(missing)} (give the output of `memfit plan --json`)"
        )
    return data


def _write(page: str, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"a report is an HTML file: name it something.html, not {path.name!r}")
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc
    return path


# ---- the parts ---------------------------------------------------------------------------------
def _figure_of(name: str, *args: Any, **kwargs: Any):
    from memfit.errors import require

    require("bokeh", "report")
    from memfit.report import _figures

    return getattr(_figures, name)(*args, **kwargs)


def _timeline_parts(
    timeline: Timeline, data: Mapping[str, Any], budget: int | None, usable: int | None
) -> list:
    if not timeline:
        return [
            "<p class='muted'>No timeline in this result (saved JSON from an older memfit, "
            "or a result made without one): run the command again to see it.</p>"
        ]
    caption = (
        f"{timeline.events:,} allocations and frees over {timeline.operations:,} operations"
        + (f", thinned to {len(timeline):,} moments" if len(timeline) < timeline.events else "")
        + ". Hover to read each category at a moment; drag or scroll to zoom."
    )
    parts: list = [_figure_of("timeline_chart", timeline, budget_bytes=budget, usable_bytes=usable)]
    nodes = data.get("nodes") or data.get("config", {}).get("nodes")
    if timeline.categories and not timeline.matches(data["categories"]):
        why = (
            f"the bars above are one of {nodes} ranks' share after sharding"
            if nodes and nodes > 1
            else "the categories above were adjusted after the step ran"
        )
        caption += f" The timeline is the step as it ran; {why}."
    peak_i = timeline.peak_index
    if peak_i >= 0 and timeline.modules[peak_i]:
        caption += f" At the peak the step was in <code>{_e(timeline.modules[peak_i])}</code>."
    parts.insert(0, "<p class='muted'>" + caption + "</p>")
    return parts


def _profile_title(data: Mapping[str, Any]) -> str:
    what = "measured" if data.get("method") == "measured" else "estimated"
    return f"{data.get('workload') or 'model'}: training-step memory ({what})"


def _profile_subtitle(data: Mapping[str, Any]) -> str:
    parts = [
        f"batch {data.get('batch_size')}",
        str(data.get("optimizer", "")),
        str(data.get("precision", "")),
        f"device {data.get('device', '')}",
    ]
    if (data.get("nodes") or 1) > 1:
        parts.append(f"per rank of {data['nodes']}")
    config = data.get("config") or {}
    if config:
        parts.append(", ".join(f"{k}={v}" for k, v in config.items()))
    return " · ".join(p for p in parts if p)


def _profile_cards(data: Mapping[str, Any], verdict: Mapping[str, Any] | None) -> list:
    cards = [
        ("peak", format_bytes(data["peak_bytes"]), f"in the {_phase(data.get('peak_phase', ''))}"),
    ]
    biggest = max(CATEGORIES, key=lambda c: data["categories"].get(c, 0))
    share = data["categories"][biggest] / max(data["peak_bytes"], 1)
    cards.append(("largest share", biggest, f"{100 * share:.0f}% of the peak"))
    if data.get("process_step_bytes") is not None:
        label = "process peak (RSS)" if data.get("device") == "cpu" else "allocator peak"
        cards.append((label, format_bytes(data["process_step_bytes"]), "above the idle process"))
    if data.get("step_time_s"):
        cards.append(("step time", f"{1000 * data['step_time_s']:,.0f} ms", "the measured step"))
    if verdict:
        fits = verdict.get("fits")
        detail = (
            f"{format_bytes(verdict['budget_bytes'] - verdict.get('need_bytes', 0))} to spare"
            if fits
            else f"{format_bytes(verdict.get('shortfall_bytes', 0))} short"
        )
        cards.append(
            (
                "budget " + format_bytes(verdict["budget_bytes"]),
                "fits" if fits else "does not fit",
                detail,
                "ok" if fits else "bad",
            )
        )
        if verdict.get("max_batch_size"):
            cards.append(
                (
                    "largest batch that fits",
                    str(verdict["max_batch_size"]),
                    f"power of two: {verdict.get('max_batch_size_pow2')}",
                )
            )
        elif verdict.get("max_batch_size") == 0:
            cards.append(
                ("largest batch that fits", "none", "not even batch size 1: `memfit plan`", "bad")
            )
    return cards


def _peak_sentence(data: Mapping[str, Any]) -> str:
    cats = data["categories"]
    states = cats["parameters"] + cats["gradients"] + cats["optimizer"]
    share = states / max(data["peak_bytes"], 1)
    if share >= 0.5:
        hint = (
            "Model states (parameters, gradients, optimizer state) are most of it: lower "
            "precision, compact optimizer state, offload or sharding help; checkpointing does not."
        )
    else:
        hint = (
            "Activations and temporaries are most of it: micro-batching and activation "
            "checkpointing help without changing the maths."
        )
    return f"The five categories at the moment of the peak ({format_bytes(data['peak_bytes'])}). {hint}"


def _category_table(data: Mapping[str, Any]) -> str:
    peak = max(data["peak_bytes"], 1)
    rows = [
        (
            f"<span class='swatch' style='background:{COLORS[c]}'></span>{c}",
            format_bytes(data["categories"][c]),
            f"{data['categories'][c]:,}",
            f"{100 * data['categories'][c] / peak:.1f}%",
        )
        for c in CATEGORIES
    ]
    rows.append(
        ("<b>peak</b>", format_bytes(data["peak_bytes"]), f"{data['peak_bytes']:,}", "100%")
    )
    for phase, value in (data.get("phase_peaks") or {}).items():
        if value:
            rows.append(
                (
                    f"<span class='muted'>highest in {_phase(phase)}</span>",
                    format_bytes(value),
                    f"{value:,}",
                    "",
                )
            )
    return _table(("category", "at the peak", "bytes", "share"), rows, raw=True)


def _module_table(rows: Sequence[Mapping[str, Any]]) -> str:
    return _table(
        ("module", "type", "parameters", "activations"),
        [
            (
                r["name"],
                r.get("type", ""),
                format_bytes(r["parameters"]),
                format_bytes(r["activations"]),
            )
            for r in rows
        ],
    )


def _plan_title(data: Mapping[str, Any]) -> str:
    verdict = "fits" if data.get("fits") else "does not fit"
    return f"{data.get('workload') or 'model'}: plan for {format_bytes(data['budget_bytes'])} ({verdict})"


def _plan_subtitle(data: Mapping[str, Any]) -> str:
    parts = [f"batch {data.get('batch_size')}", str(data.get("optimizer", ""))]
    if (data.get("nodes") or 1) > 1:
        parts.append(f"memory per rank of {data['nodes']}")
    if data.get("time_source"):
        parts.append(f"time from {data['time_source']}")
    return " · ".join(p for p in parts if p and p != "None")


def _plan_cards(data: Mapping[str, Any]) -> list:
    base, pred = data["baseline_peak_bytes"], data["predicted_peak_bytes"]
    cards = [
        (
            "budget",
            format_bytes(data["budget_bytes"]),
            f"usable {format_bytes(data.get('usable_bytes') or data['budget_bytes'])}",
        ),
        ("baseline peak", format_bytes(base), "without the plan"),
        (
            "planned peak",
            format_bytes(pred),
            f"{base / max(pred, 1):.1f}x less" if pred < base else "predicted",
            "ok" if data.get("fits") else "bad",
        ),
        (
            "time",
            f"{100 * data.get('predicted_time_overhead', 0):+.0f}%",
            "predicted change per step",
        ),
    ]
    if data.get("measured_peak_bytes") is not None:
        ok = data["measured_peak_bytes"] <= (data.get("usable_bytes") or data["budget_bytes"])
        cards.append(
            (
                "measured peak",
                format_bytes(data["measured_peak_bytes"]),
                "real training steps",
                "ok" if ok else "bad",
            )
        )
    if not data.get("fits") and data.get("shortfall_bytes"):
        cards.append(
            (
                "short by",
                format_bytes(data["shortfall_bytes"]),
                f"fewest ranks: {data.get('min_nodes')}" if data.get("min_nodes") else "",
                "bad",
            )
        )
    return cards


def _plan_sentence(data: Mapping[str, Any]) -> str:
    techniques = data.get("techniques") or []
    if not data.get("fits"):
        return "No combination fits; the bar shows the closest one. " + (
            f"Short by {format_bytes(data['shortfall_bytes'])}."
            if data.get("shortfall_bytes")
            else ""
        )
    if not techniques:
        return "The step fits as it is: nothing needs to change."
    return f"The plan: {', '.join(techniques)}."


def _plan_bars(data: Mapping[str, Any], base: Mapping[str, Any] | None) -> list:
    """Baseline and plan, predicted; measured too where a real run gave the numbers."""
    measured_base = base is not None and base.get("method") == "measured"
    base_cats = data.get("baseline_categories")
    same_estimate = (
        base is not None and not measured_base and base["peak_bytes"] == data["baseline_peak_bytes"]
    )
    if base_cats is None and same_estimate:
        base_cats = base["categories"]  # the same step, split by category
    bars = [("baseline (predicted)", base_cats or {"total": data["baseline_peak_bytes"]})]
    if measured_base:
        bars.append(("baseline (measured)", base["categories"]))
    bars.append(
        (
            "plan (predicted)",
            data.get("predicted_categories") or {"total": data["predicted_peak_bytes"]},
        )
    )
    if data.get("measured_peak_bytes") is not None:
        bars.append(
            (
                "plan (measured)",
                data.get("measured_categories") or {"total": data["measured_peak_bytes"]},
            )
        )
    return bars


def _plan_settings_table(data: Mapping[str, Any]) -> str:
    checkpointed = data.get("checkpointed") or []
    rows = [
        (
            "micro-batch",
            f"{data.get('micro_batch_size')} x {data.get('accumulation_steps')} accumulation steps",
        ),
        (
            "checkpointed",
            (
                f"{data['checkpoint_segments']} segments of "
                if data.get("checkpoint_segments")
                else ""
            )
            + (
                ", ".join(checkpointed[:12])
                + (f" and {len(checkpointed) - 12} more" if len(checkpointed) > 12 else "")
                if checkpointed
                else "nothing"
            ),
        ),
        ("precision", data.get("precision", "")),
        ("optimizer state", data.get("optimizer_state", "")),
        ("techniques", ", ".join(data.get("techniques") or []) or "none"),
        ("exact", "yes" if data.get("exact", True) else "no (lossy)"),
    ]
    return _table(("setting", "value"), rows)


def _verify_table(data: Mapping[str, Any]) -> str:
    pred, meas = data["predicted_peak_bytes"], data["measured_peak_bytes"]
    usable = data.get("usable_bytes") or data["budget_bytes"]
    rows = [
        ("predicted peak", format_bytes(pred), f"{pred:,}"),
        ("measured peak", format_bytes(meas), f"{meas:,}"),
        ("measured / predicted", f"{meas / max(pred, 1):.2f}", ""),
        ("inside the usable budget", "yes" if meas <= usable else "no", format_bytes(usable)),
    ]
    return _table(("", "", "bytes"), rows)


def _alternatives_table(alternatives: Sequence[Mapping[str, Any]]) -> str:
    shown = sorted(alternatives, key=lambda a: (not a["fits"], a["predicted_time_overhead"]))
    return _table(
        ("settings", "predicted peak", "time", "fits", "exact"),
        [
            (
                a.get("label", ""),
                format_bytes(a["predicted_peak_bytes"]),
                f"{100 * a['predicted_time_overhead']:+.0f}%",
                "yes" if a["fits"] else "no",
                "yes" if a.get("exact", True) else "no",
            )
            for a in shown
        ],
    )


def settings_label(plan: Mapping[str, Any]) -> str:
    """`micro 64x2, ckpt 12, bf16`: a plan's settings in the planner's own short form."""
    parts = [f"micro {plan.get('micro_batch_size')}x{plan.get('accumulation_steps')}"]
    if plan.get("checkpoint_segments"):
        parts.append(f"ckpt {plan['checkpoint_segments']} segments")
    elif plan.get("checkpointed"):
        parts.append(f"ckpt {len(plan['checkpointed'])}")
    if plan.get("precision", "fp32") != "fp32":
        parts.append(str(plan["precision"]))
    if plan.get("optimizer_state", "fp32") != "fp32":
        parts.append(f"state {plan['optimizer_state']}")
    return ", ".join(parts)


def _phase(name: str) -> str:
    return {"optimizer_step": "optimizer step"}.get(name, name) + (
        " pass" if name in ("forward", "backward") else ""
    )


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False) -> str:
    cell = (lambda v: str(v)) if raw else _e
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{_e(h)}</th>" for h in head)
        + f"</tr></thead><tbody>{body}</tbody></table>"
    )


# ---- the page ----------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub,.muted{color:#666}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0 4px}
.card{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:8px 14px;min-width:150px}
.card .k{font-size:12px;color:#666}.card .v{font-size:20px;font-weight:600}.card .d{font-size:12px;color:#666}
.card.ok .v{color:#2e7d32}.card.bad .v{color:#c62828}
table{border-collapse:collapse;margin:10px 0;background:#fff;font-variant-numeric:tabular-nums}
th,td{border:1px solid #e3e3e3;padding:3px 10px;text-align:left}th{background:#f2f2f2;font-weight:600}
td:nth-child(n+2){text-align:right}.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}
.chart{margin:8px 0}footer{margin-top:36px;font-size:12px;color:#888}
#memfit-chart-error{display:none;background:#fdecea;color:#611a15;padding:8px 12px;border-radius:4px;margin:12px 0}
code{background:#f0f0f0;padding:0 3px;border-radius:3px}
"""

# Shown instead of silently missing charts if a script fails (an old browser, a blocked one).
_ERROR_BANNER = """<script>window.addEventListener("error",function(e){var b=document.getElementById(
"memfit-chart-error");if(b){b.style.display="block";b.textContent="A chart could not be drawn ("
+(e.message||"script error")+"); the tables below still hold every number."}});</script>"""


class _Page:
    def __init__(self, title: str, subtitle: str):
        self.title, self.subtitle = title, subtitle
        self._body: list[str] = []
        self._figures: list = []

    def cards(self, cards: Sequence[tuple]) -> None:
        out = []
        for key, value, detail, *state in cards:
            cls = f"card {state[0]}" if state else "card"
            out.append(
                f"<div class='{cls}'><div class='k'>{_e(key)}</div><div class='v'>{_e(value)}</div>"
                f"<div class='d'>{_e(detail)}</div></div>"
            )
        self._body.append("<div class='cards'>" + "".join(out) + "</div>")

    def section(self, heading: str, *parts: Any, intro: str | None = None) -> None:
        self._body.append(f"<section><h2>{_e(heading)}</h2>")
        if intro:
            self._body.append(f"<p>{_e(intro)}</p>")
        for part in parts:
            if isinstance(part, str):
                self._body.append(part)
            else:  # a Bokeh figure: a placeholder now, filled by `components` at render time
                self._body.append(f"<div class='chart'>\x00figure{len(self._figures)}\x00</div>")
                self._figures.append(part)
        self._body.append("</section>")

    def render(self) -> str:
        from bokeh.embed import components
        from bokeh.resources import Resources

        import memfit

        body = "\n".join(self._body)
        script = ""
        if self._figures:
            script, divs = components(self._figures)
            for i, div in enumerate(divs):
                body = body.replace(f"\x00figure{i}\x00", div, 1)
        # Only Bokeh's core: the widget, table and MathJax bundles are not used here.
        bokeh_js = Resources(mode="inline", components=["bokeh"]).render_js()
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(self.title)} · memfit</title><style>{_CSS}</style>{_ERROR_BANNER}"
            f"{bokeh_js}</head><body><main>"
            f"<h1>{_e(self.title)}</h1><div class='sub'>{_e(self.subtitle)}</div>"
            "<div id='memfit-chart-error'></div>"
            f"{body}<footer>memfit {memfit.__version__} · {stamp} · sizes in decimal units "
            f"(1 MB = 10<sup>6</sup> bytes)</footer></main>{script}</body></html>\n"
        )
