"""The demo's story holds: the planned run fits an eighth of the baseline and learns as well."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from memfit.budget import format_bytes
from memfit.demo import DemoResult, demo_story, run_demo
from memfit.report.chart import plot_before_after

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> tuple[DemoResult, str]:
    # One run for every assertion below: the demo is the slowest thing in the suite.
    out = io.StringIO()
    folder = tmp_path_factory.mktemp("demo")
    result = demo_story(
        folder / "demo.png", Console(file=out, width=120), report_path=folder / "demo.html"
    )
    return result, out.getvalue()


def test_budget_is_an_eighth_of_the_measured_baseline_peak(story) -> None:
    result, text = story
    assert result.budget_bytes == result.baseline_profile.peak_bytes // 8
    assert result.baseline_profile.method == "measured"
    assert f"{result.budget_bytes:,} bytes" in text
    assert "reserve_bytes=0" in text


def test_planned_run_measured_peak_stays_inside_the_budget(story) -> None:
    result, _ = story
    assert result.plan.fits
    assert 0 < result.planned.peak_bytes <= result.budget_bytes
    assert result.within_budget
    # The baseline really needed more: the budget is not trivially met.
    assert result.baseline.peak_bytes > 4 * result.budget_bytes
    assert result.memory_ratio > 4


def test_planned_run_learns_as_well_as_plain_pytorch(story) -> None:
    result, _ = story
    # Ten classes: chance is 0.1. Micro-batches change BatchNorm statistics a little.
    assert result.baseline.accuracy > 0.8
    assert result.planned.accuracy > 0.8
    assert abs(result.accuracy_gap) <= 0.03
    assert len(result.planned.epoch_losses) == result.epochs
    assert result.planned.epoch_losses[-1] < result.planned.epoch_losses[0]


def test_chart_is_a_png_with_both_runs(story) -> None:
    result, _ = story
    assert result.plot_path.read_bytes()[:8] == PNG_MAGIC
    # The chart's bars are these categories: each run's add up to its measured peak.
    assert sum(result.baseline.categories.values()) == result.baseline.peak_bytes
    assert 0 < sum(result.planned.categories.values()) <= result.planned.peak_bytes


def test_the_demo_writes_its_report_with_both_measured_peaks(story) -> None:
    result, text = story
    page = (result.plot_path.parent / "demo.html").read_text(encoding="utf-8")
    assert "demo.html" in text
    # The plan's measured peak and the measured baseline, as the tables print them.
    assert format_bytes(result.planned.peak_bytes) in page
    assert "baseline (measured)" in page and "plan (measured)" in page
    assert format_bytes(result.baseline_profile.peak_bytes) in page


def test_step_times_are_measured(story) -> None:
    result, _ = story
    assert result.baseline.update_s > 0 and result.planned.update_s > 0


def test_run_demo_exit_code_follows_the_budget(monkeypatch, story) -> None:
    result, _ = story
    monkeypatch.setattr("memfit.demo.demo_story", lambda *a, **k: result)
    assert run_demo("unused.png") == 0
    over = DemoResult(
        **{
            **vars(result),
            "planned": type(result.planned)(
                **{**vars(result.planned), "peak_bytes": result.budget_bytes + 1}
            ),
        }
    )
    monkeypatch.setattr("memfit.demo.demo_story", lambda *a, **k: over)
    assert run_demo("unused.png") == 1


def test_before_after_chart_writes_png(tmp_path: Path) -> None:
    before = {"parameters": 1_000_000, "activations": 8_000_000}
    after = {"parameters": 1_000_000, "activations": 500_000}
    path = plot_before_after(
        [("before", before), ("after", after)], tmp_path / "c.png", budget_bytes=2_000_000
    )
    assert path.read_bytes()[:8] == PNG_MAGIC
