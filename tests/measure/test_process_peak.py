"""The tracker's peak against what the operating system saw."""

import pytest

from memfit import zoo
from memfit.measure.process import ProcessPeak, stabilize_allocator
from memfit.measure.profile import profile


def test_tracker_and_process_peak_agree_on_a_big_step():
    # ~0.9 GB step: big enough that interpreter and library overheads are noise.
    p = profile(zoo.get("transformer"), 8)
    assert p.peak_bytes > 500e6
    assert p.process_step_bytes == pytest.approx(p.peak_bytes, rel=0.20)
    # the high-water mark is reset as each phase begins, so each phase has its own reading
    for phase in ("forward", "backward", "optimizer_step"):
        assert p.process_phase_peaks[phase] == pytest.approx(p.phase_peaks[phase], rel=0.20)
    assert p.process_phase_peaks["optimizer_step"] < 0.7 * p.process_phase_peaks["backward"]


def test_process_peak_sees_a_short_lived_allocation():
    import torch

    stabilize_allocator()
    peak = ProcessPeak("cpu")
    peak.start()
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, then freed
    del x
    peak.stop()
    assert peak.peak_bytes - peak.baseline_bytes >= 60 * 2**20


def test_profiling_leaves_the_allocator_fast(monkeypatch):
    from memfit import zoo
    from memfit.measure import process

    calls = []
    monkeypatch.setattr(process, "env_is_stable", lambda: False)
    monkeypatch.setattr("memfit.measure.profile.env_is_stable", lambda: False)
    monkeypatch.setattr("memfit.measure.profile.relax_allocator", lambda: calls.append(1))
    profile(zoo.get("cnn"), 2)
    assert calls == [1]
