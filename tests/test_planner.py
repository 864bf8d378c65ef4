"""The planner: predictions that hold when the plan is applied, and honest failures."""

import pytest
import torch

from memfit import zoo
from memfit.optim import make_optimizer
from memfit.planner import plan

CONTRACT_KEYS = {
    "budget_bytes",
    "fits",
    "baseline_peak_bytes",
    "predicted_peak_bytes",
    "micro_batch_size",
    "accumulation_steps",
    "checkpointed",
    "precision",
    "optimizer_state",
    "predicted_time_overhead",
    "techniques",
}


def _measured_peak(p, workload, steps=2):
    torch.manual_seed(0)
    model = workload.build_model()
    step = p.apply(model, make_optimizer(p.optimizer, model.parameters()))
    return max(step.measure(workload.make_batch(p.batch_size, "cpu"))[1] for _ in range(steps))


def test_a_plan_that_fits_keeps_its_promise_when_applied():
    w = zoo.get("transformer", layers=4, d_model=128, heads=4, seq_len=128, vocab=500)
    p = plan(w, "60MB", batch_size=32, reserve_bytes=0)
    assert p.fits and p.baseline_peak_bytes > 60e6
    assert p.predicted_peak_bytes <= p.usable_bytes
    measured = _measured_peak(p, w)
    assert measured <= 60e6
    assert measured == pytest.approx(p.predicted_peak_bytes, rel=0.05)
    assert set(p.to_dict()) >= CONTRACT_KEYS


def test_exact_plans_use_exact_techniques_only():
    w = zoo.get("mlp", depth=6, width=512, inputs=512)
    p = plan(w, "35MB", batch_size=1024, exact=True, reserve_bytes=0)
    assert p.fits
    assert p.precision == "fp32" and p.optimizer_state in ("fp32", "offload")
    assert set(p.techniques) <= {"micro-batching", "checkpointing", "offload"}
    assert all(c.settings.exact for c in p.alternatives)


def test_when_model_states_dominate_compact_state_beats_checkpointing():
    # 32 x Linear(1024): 134 MB of fp32 parameters, Adam state twice that; tiny activations.
    w = zoo.get("mlp", depth=32, width=1024, inputs=1024)
    p = plan(w, "420MB", batch_size=8, reserve_bytes=0, allow_offload=False)
    assert p.baseline.peak_phase == "optimizer_step"
    assert any("optimizer step sets the peak" in n for n in p.notes)
    # Compact model state: low-bit moments, or bf16 weights (half the bytes of parameters,
    # gradients and moments), whichever is predicted faster here.
    assert p.fits and (p.optimizer_state in ("8bit", "4bit") or p.to_dict()["weights"] == "bf16")
    assert not p.checkpointed
    exact = plan(w, "420MB", batch_size=8, exact=True, reserve_bytes=0, allow_offload=False)
    assert not exact.fits and exact.shortfall_bytes > 0
    assert any("nothing fits" in n for n in exact.notes)


def test_offload_is_the_exact_way_past_model_states():
    w = zoo.get("mlp", depth=6, width=512, inputs=512)  # 25 MB of parameters, grads and Adam state
    p = plan(w, "22MB", batch_size=64, exact=True, reserve_bytes=0)
    assert p.fits and p.optimizer_state == "offload"
    assert p.to_dict()["offload_resident_bytes"] is not None
    measured = _measured_peak(p, w)
    assert measured <= 22e6


def test_nothing_fits_reports_the_smallest_peak_and_the_shortfall():
    w = zoo.get("mlp", depth=4, width=1024, inputs=1024)
    p = plan(w, "5MB", batch_size=64, reserve_bytes=0, allow_offload=False)
    assert not p.fits
    assert p.predicted_peak_bytes == min(
        c.predicted_peak_bytes for c in [p.chosen, *p.alternatives]
    )
    assert p.shortfall_bytes == p.predicted_peak_bytes - p.usable_bytes
    assert p.to_dict()["fits"] is False


def test_batchnorm_models_are_warned_about_micro_batches():
    w = zoo.get("cnn", channels=32)
    p = plan(w, "20MB", batch_size=1024, reserve_bytes=0)
    assert p.fits and p.accumulation_steps > 1
    assert any("BatchNorm" in n for n in p.notes)


def test_a_fitting_baseline_needs_no_technique():
    p = plan(zoo.get("cnn"), "1GB", batch_size=16, reserve_bytes=0)
    assert p.fits and p.techniques == [] and p.predicted_time_overhead == 0
    assert p.micro_batch_size == 16 and p.accumulation_steps == 1


def test_accumulating_plans_count_the_whole_batch_the_caller_holds():
    w = zoo.get("cnn")
    p = plan(w, "4179600", batch_size=512, reserve_bytes=0)
    assert p.fits and p.accumulation_steps > 1
    measured = _measured_peak(p, w)
    assert measured <= p.usable_bytes
    assert measured == pytest.approx(p.predicted_peak_bytes, rel=0.03)


def test_alternatives_are_listed_once():
    w = zoo.get("wrn-28-2", depth=10)
    p = plan(w, "20MB", batch_size=64, exact=True, reserve_bytes=0, allow_offload=False)
    keys = [(c.settings.label(), frozenset(c.settings.checkpointed)) for c in p.alternatives]
    assert len(keys) == len(set(keys))


def test_batchnorm_models_try_tiny_micro_batches_last():
    w = zoo.get("cnn", channels=32)
    p = plan(w, "20MB", batch_size=1024, reserve_bytes=0)
    assert p.micro_batch_size >= 8


def test_no_more_lossy_techniques_than_needed():
    w = zoo.get("mlp", depth=16, width=1024, inputs=1024)
    # 67 MB of fp32 parameters: with Adam, 268 MB of model states. At 250 MB, freeing the
    # gradients inside backward is enough (exact); at 190 MB one lossy technique is needed.
    p = plan(w, "250MB", batch_size=64, reserve_bytes=0, allow_offload=False)
    assert p.fits and p.settings.lossy_count == 0
    assert "optimizer-in-backward" in p.techniques
    p = plan(w, "190MB", batch_size=64, reserve_bytes=0, allow_offload=False)
    assert p.fits and p.settings.lossy_count == 1


def test_time_model_interpolates_below_its_line():
    from memfit.timing import StepTimeModel, probe_batches

    assert probe_batches(128) == (1, 16, 64)
    assert probe_batches(16) == (2, 8)
    tm = StepTimeModel(
        fixed_s=0.0, per_sample_s=0.01, optimizer_s=0.0, small_probe=(1, 0.05), line_from=16
    )
    assert tm.pass_s(1) == 0.05  # measured, not the line's 0.01
    assert tm.pass_s(16) == pytest.approx(0.16)
    assert 0.05 < tm.pass_s(8) < 0.16
    assert tm.forward_backward_s(128, 1) == pytest.approx(128 * 0.05)
    assert tm.forward_backward_s(128, 128) == pytest.approx(1.28)


def test_the_search_is_a_function_of_its_inputs():
    from memfit.budget import Budget
    from memfit.planning import build_plan
    from memfit.planning.inputs import FakeRuns, PlanRequest, gather, measure_more
    from memfit.planning.search import search

    w = zoo.get("transformer", layers=2, d_model=128, heads=4, seq_len=64, vocab=500)
    request = PlanRequest(
        batch_size=32, optimizer=None, device="cpu", room=Budget.parse("25MB").room(0)
    )
    ctx = measure_more(gather(w, request), "lossy")
    plans = [build_plan(ctx, search(ctx, FakeRuns(w, request)), w, None) for _ in range(2)]
    assert plans[0].to_dict() == plans[1].to_dict()
    assert plans[0].settings == plans[1].settings and plans[0].fits
    # And the measuring is all in `gather`: given the same time model, plan() agrees too.
    again = plan(w, "25MB", batch_size=32, reserve_bytes=0, time_model=ctx.measurements.time_model)
    assert again.settings == plans[0].settings


def test_min_nodes_is_given_whenever_nothing_fits():
    w = zoo.get("mlp", depth=16, width=1024, inputs=1024)
    p = plan(w, "120MB", batch_size=8, exact=True, reserve_bytes=0, allow_offload=False)
    assert not p.fits and p.min_nodes is not None and p.min_nodes > 1
    args = dict(batch_size=8, exact=True, reserve_bytes=0, allow_offload=False)
    assert plan(w, "120MB", nodes=p.min_nodes, **args).fits
    assert not plan(w, "120MB", nodes=p.min_nodes - 1, **args).fits
