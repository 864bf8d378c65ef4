"""The report's content: the numbers of the result it draws, self-contained, readable back."""

from __future__ import annotations

import json
import re

import pytest

import memfit
from memfit.budget import format_bytes
from memfit.errors import ReportError
from memfit.memory_profile import MemoryProfile
from memfit.report.html import plan_html, profile_html, report_html, write_report
from memfit.report.notebook import plan_repr_html, profile_repr_html, show


@pytest.fixture(scope="module")
def estimated() -> MemoryProfile:
    return memfit.estimate(memfit.zoo.get("transformer", layers=2, d_model=128), 4)


def test_profile_report_holds_the_results_numbers_and_no_outside_reference(estimated) -> None:
    page = profile_html(estimated)
    for name, value in estimated.categories.items():
        assert f"{value:,}" in page, name
    assert format_bytes(estimated.peak_bytes) in page
    top = estimated.top_modules(3)[0]
    assert top.name in page
    # Nothing is loaded from elsewhere: no src/href to the web in the markup, Bokeh's code
    # is inline (what that code may fetch is checked in the browser test).
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", markup)
    assert "<script src" not in page
    # Small enough to mail: Bokeh's core (about 1.3 MB) and the data.
    assert len(page.encode()) < 2 * 10**6


def test_report_from_saved_json_matches_the_live_one(estimated) -> None:
    saved = json.loads(json.dumps(estimated.to_dict(timeline=True)))
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d|p\d{4,}|[0-9a-f]{8}-[0-9a-f-]{27}")
    live = stamp.sub("", profile_html(estimated))
    again = stamp.sub("", report_html(saved))
    assert live == again


def test_timeline_section_says_how_many_events_and_where_the_peak_was(estimated) -> None:
    page = profile_html(estimated)
    assert f"{estimated.timeline.events:,} allocations and frees" in page
    assert estimated.timeline.modules[estimated.timeline.peak_index] in page


def test_a_result_without_timeline_still_reports_and_says_so(estimated) -> None:
    page = report_html(estimated.to_dict())  # the old JSON: no timeline key
    assert "No timeline in this result" in page


def test_plan_report_shows_budget_alternatives_notes_and_measured() -> None:
    plan = {
        "workload": "toy",
        "budget_bytes": 10**8,
        "usable_bytes": 9 * 10**7,
        "fits": True,
        "batch_size": 64,
        "baseline_peak_bytes": 3 * 10**8,
        "predicted_peak_bytes": 8 * 10**7,
        "micro_batch_size": 16,
        "accumulation_steps": 4,
        "checkpointed": ["blocks.0"],
        "precision": "fp32",
        "optimizer_state": "fp32",
        "predicted_time_overhead": 0.25,
        "techniques": ["micro-batching", "checkpointing"],
        "measured_peak_bytes": 7 * 10**7,
        "notes": ["a note <b>with markup</b>"],
        "alternatives": [
            {
                "label": "micro 32x2",
                "predicted_peak_bytes": 2 * 10**8,
                "predicted_time_overhead": 0.1,
                "fits": False,
                "exact": True,
            },
        ],
    }
    page = plan_html(plan)
    assert "Alternatives considered" in page and "micro 32x2" in page
    assert "Predicted against measured" in page and "70.0 MB" in page
    assert "0.88" in page  # measured / predicted
    assert "a note &lt;b&gt;with markup&lt;/b&gt;" in page  # escaped, not markup
    assert "+25%" in page
    notebook = plan_repr_html(plan)
    assert "<svg" in notebook and "70.0 MB" in notebook


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"rows": 3}, "not the output"),
        ([1, 2], "cannot draw a report of a list"),
    ],
)
def test_what_is_not_a_result_is_refused_with_what_to_give(data, needle) -> None:
    with pytest.raises(ReportError, match=needle):
        report_html(data)


def test_a_report_is_written_only_to_an_html_name(tmp_path, estimated) -> None:
    with pytest.raises(ReportError, match="something.html"):
        write_report(estimated, tmp_path / "report.png")
    with pytest.raises(ReportError, match="cannot write"):
        write_report(estimated, tmp_path / "missing" / "report.html")


def test_notebook_html_is_light_and_holds_the_categories(estimated) -> None:
    html = estimated._repr_html_()
    assert "<svg" in html and "<script" not in html
    assert format_bytes(estimated.categories["activations"]) in html
    assert len(html) < 100_000
    ids = re.compile(r"#?[pm][0-9a-f]{10}")  # matplotlib's random clip-path and marker ids
    assert ids.sub("", html) == ids.sub("", profile_repr_html(estimated))


def test_show_draws_the_report_in_a_frame(monkeypatch, estimated) -> None:
    import html as html_module
    import sys
    import types

    shown = []
    display = types.ModuleType("IPython.display")
    display.HTML = lambda text: text
    display.display = shown.append
    ipython = types.ModuleType("IPython")
    ipython.display = display
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    memfit.show(estimated)
    (frame,) = shown
    inner = html_module.unescape(re.search(r'srcdoc="(.*?)" style', frame, re.S).group(1))
    assert inner.startswith("<!DOCTYPE html>") and f"{estimated.peak_bytes:,}" in inner
    assert show is memfit.show
