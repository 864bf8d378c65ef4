"""The timeline by category: hand-counted bytes, the peak kept when thinned, saved and read back."""

from __future__ import annotations

import torch

import memfit
from memfit.measure.timeline import MAX_SAMPLES, Timeline
from memfit.measure.tracker import MemoryTracker


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def test_samples_follow_allocations_and_frees_counted_by_hand() -> None:
    param = torch.nn.Parameter(torch.zeros(256))
    tracker = MemoryTracker()
    tracker.register([param], "parameters")
    with tracker.track():
        tracker.phase = "forward"
        a = torch.ones(1000)  # 4000 bytes
        b = torch.ones(500, dtype=torch.float64)  # 4000 bytes
        del a
        tracker.phase = "backward"
        c = torch.ones(10, dtype=torch.int8)  # 10 bytes
    timeline = tracker.result().timeline
    base = _nbytes(param)
    assert timeline.categories["parameters"] == [base] * len(timeline)
    assert timeline.totals == [
        base,
        base + 4000,
        base + 8000,
        base + 4000,
        base + 4000,
        base + 4010,
    ]
    assert timeline.peak_bytes == base + 8000 == tracker.result().peak_bytes
    assert [name for name, *_ in timeline.phase_spans()] == ["forward", "backward"]
    del b, c


def test_a_long_step_is_thinned_but_keeps_its_peak_and_envelope() -> None:
    tracker = MemoryTracker()
    expected_peak, live, kept = 0, 0, []
    with tracker.track():
        tracker.phase = "forward"
        for i in range(6000):
            kept.append(torch.empty(100 + i % 7, dtype=torch.uint8))
            live += 100 + i % 7
            if i % 3 == 2:
                live -= _nbytes(kept[-2])
                kept.pop(-2)
            expected_peak = max(expected_peak, live)
            if i == 4000:  # one spike, far past everything else
                spike = torch.empty(10**6, dtype=torch.uint8)
                expected_peak = max(expected_peak, live + 10**6)
                del spike
    timeline = tracker.result().timeline
    assert len(timeline) <= MAX_SAMPLES + 10 < timeline.events
    assert timeline.peak_bytes == expected_peak == tracker.result().peak_bytes
    assert min(timeline.totals[1:]) < 1000  # the low side of the envelope is there too


def test_estimate_timeline_peak_holds_the_reported_categories_low_bit_too() -> None:
    workload = memfit.zoo.get("mlp", depth=3, width=128, inputs=32)
    for optimizer in ("adam", "adam8bit"):
        e = memfit.estimate(workload, 16, optimizer)
        assert e.timeline.matches(e.categories), optimizer
        # Optimizer state is the same size all through the step.
        assert set(e.timeline.categories["optimizer"]) == {e.categories["optimizer"]}


def test_measured_profile_timeline_matches_its_categories_and_phases() -> None:
    p = memfit.profile(memfit.zoo.get("mlp", depth=2, width=64, inputs=16), 32, "sgd")
    assert p.timeline.matches(p.categories)
    names = [name for name, *_ in p.timeline.phase_spans()]
    assert names == ["forward", "backward", "optimizer_step", "zero_grad"]
    assert p.timeline.modules[p.timeline.peak_index] != "" or p.peak_phase != "forward"


def test_saved_and_read_back_unchanged() -> None:
    e = memfit.estimate(memfit.zoo.get("cnn"), 8)
    again = Timeline.from_dict(e.timeline.to_dict())
    assert again == e.timeline
    assert Timeline.from_dict([[10, 0], [30, 1]]).totals == [10, 30]  # the old pair list
