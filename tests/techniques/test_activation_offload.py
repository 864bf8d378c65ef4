"""Activation offload: its byte accounting on CPU tensors, and that a CPU is never offered it."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from memfit import zoo
from memfit.budget import Budget
from memfit.estimator.fake import estimate
from memfit.estimator.fake_build import build_fake_model
from memfit.measure.profile import run_tracked_step
from memfit.measure.step import StepSettings, TrainingStep
from memfit.planning.inputs import FakeRuns, PlanRequest, gather
from memfit.planning.search import _Search
from memfit.techniques.activation_offload import (
    ActivationOffload,
    ActivationOffloadConfig,
    saved_tensor_bytes,
    transfer_bytes,
)
from memfit.techniques.base import Prediction, TimeParts, Training
from memfit.techniques.registry import apply_all
from memfit.timing import StepTimeModel

WORKLOAD = zoo.get("transformer", layers=2, d_model=64, heads=4, seq_len=32, vocab=300)
BATCH = 8


def test_saved_bytes_counted_on_fakes_are_what_save_on_cpu_packs():
    torch.manual_seed(0)
    model = WORKLOAD.build_model()
    batch = WORKLOAD.make_batch(BATCH, "cpu")
    real = saved_tensor_bytes(model, lambda: WORKLOAD.loss(model, batch), fake=False)
    # An independent count: torch's own save_on_cpu hooks, counting numel * element_size.
    inner = torch.autograd.graph.save_on_cpu(pin_memory=True)
    counted = []

    def pack(tensor):
        counted.append(tensor.numel() * tensor.element_size())
        return inner.pack_hook(tensor)

    with torch.autograd.graph.saved_tensors_hooks(pack, inner.unpack_hook):
        loss = WORKLOAD.loss(model, batch)
    loss.backward()
    with FakeTensorMode():
        fake_model = build_fake_model(WORKLOAD, "cpu")
        fake_batch = WORKLOAD.make_batch(BATCH, "cpu")
        fake = saved_tensor_bytes(fake_model, lambda: WORKLOAD.loss(fake_model, fake_batch))
    assert real.packed_bytes == sum(counted) == fake.packed_bytes
    assert real.parameter_bytes == fake.parameter_bytes > 0  # weights saved by their layers
    assert real.packed_bytes > 2 * real.parameter_bytes


def _unique_saved_activation_bytes(model, batch) -> int:
    """Bytes of the distinct non-parameter storages autograd saves: what leaves the device."""
    params = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = WORKLOAD.loss(model, batch)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def _tracked_peak(configs) -> int:
    torch.manual_seed(0)
    model = WORKLOAD.build_model()
    optimizer = torch.optim.Adam(model.parameters())
    training = apply_all(
        configs, Training(model=model, optimizer=optimizer, settings=StepSettings(), batch_size=8)
    )
    step = TrainingStep.for_workload(WORKLOAD, model, training.optimizer, training.settings)
    batch = WORKLOAD.make_batch(BATCH, "cpu")
    step(batch)  # the optimizer's state
    result, _ = run_tracked_step(WORKLOAD, model, optimizer, batch, step=step)
    return result.peak_bytes


def test_the_predicted_peak_falls_by_the_saved_tensors_and_holds_when_run():
    offload = (ActivationOffloadConfig(),)
    plain = estimate(WORKLOAD, BATCH)
    moved = estimate(WORKLOAD, BATCH, techniques=offload)
    torch.manual_seed(0)
    model = WORKLOAD.build_model()
    saved = _unique_saved_activation_bytes(model, WORKLOAD.make_batch(BATCH, "cpu"))
    # The fake run's saved activations at the end of forward against a hand count of
    # the distinct storages autograd saved on real tensors.
    assert plain.phase_categories["forward"]["activations"] == pytest.approx(saved, rel=0.03)
    # Offloaded, none stays on the device; backward brings back one operation's at a time.
    assert moved.phase_categories["forward"]["activations"] < 0.01 * saved
    assert plain.peak_bytes - moved.peak_bytes > 0.5 * saved
    # The real hooks on CPU tensors: their host copies are made out of the tracker's sight,
    # as on a GPU they are out of the device's memory.
    assert _tracked_peak(()) == pytest.approx(plain.peak_bytes, rel=0.03)
    assert _tracked_peak(offload) == pytest.approx(moved.peak_bytes, rel=0.03)


def test_the_update_is_unchanged_bit_for_bit():
    torch.manual_seed(0)
    plain = WORKLOAD.build_model()
    offloaded = copy.deepcopy(plain)
    batch = WORKLOAD.make_batch(BATCH, "cpu")
    for model, configs in ((plain, ()), (offloaded, (ActivationOffloadConfig(),))):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        training = apply_all(
            configs,
            Training(model=model, optimizer=optimizer, settings=StepSettings(), batch_size=8),
        )
        TrainingStep.for_workload(WORKLOAD, model, optimizer, training.settings)(batch)
    for a, b in zip(plain.parameters(), offloaded.parameters(), strict=True):
        assert torch.equal(a, b)


def _context(device="cpu"):
    request = PlanRequest(
        batch_size=BATCH, optimizer=None, device=device, room=Budget.parse("1MB").room(0)
    )
    model = StepTimeModel(fixed_s=0.01, per_sample_s=0.001, optimizer_s=0.01, source="given")
    return gather(WORKLOAD, request, time_model=model, calibrate=False), request


def test_a_cpu_is_never_offered_it():
    ctx, request = _context()
    assert "host memory" in ActivationOffload().supports(ctx)
    combos = [c for tier in _Search(ctx, FakeRuns(WORKLOAD, request)).tiers() for c in tier]
    assert combos and not any(
        c.technique == "activation-offload" for combo in combos for c in combo
    )


def test_its_time_is_the_saved_bytes_twice_over_the_bandwidth():
    ctx, _ = _context()
    # The planner's count, with the CUDA facts filled in as read_facts does on CUDA.
    with FakeTensorMode():
        model = build_fake_model(WORKLOAD, "cpu")
        sample = WORKLOAD.make_batch(4, "cpu")
        count = saved_tensor_bytes(model, lambda: WORKLOAD.loss(model, sample))
    facts = dataclasses.replace(
        ctx.facts,
        saved_bytes_per_sample=(count.packed_bytes - count.parameter_bytes) / 4,
        saved_parameter_bytes=count.parameter_bytes,
    )
    cuda = dataclasses.replace(
        ctx,
        request=dataclasses.replace(ctx.request, device="cuda"),
        facts=facts,
        measurements=dataclasses.replace(ctx.measurements, host_device_bandwidth=1e9),
    )
    tech = ActivationOffload()
    assert tech.supports(cuda) is None
    # Per-sample activations over 4 samples, scaled to the batch, plus the weights once.
    torch.manual_seed(0)
    real = WORKLOAD.build_model()
    batch = WORKLOAD.make_batch(BATCH, "cpu")
    counted = saved_tensor_bytes(real, lambda: WORKLOAD.loss(real, batch), fake=False)
    assert transfer_bytes(cuda) == pytest.approx(counted.packed_bytes, rel=0.02)
    before = Prediction(phases={"forward": {}}, time=TimeParts(compute_s=1.0))
    after = tech.effect(ActivationOffloadConfig(), before, cuda)
    assert after.time.extra_s == pytest.approx(2 * transfer_bytes(cuda) / 1e9)
