"""The update inside backward: the same parameters as the ordinary step, gradients gone."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util

import pytest
import torch

from memfit import zoo
from memfit.budget import Budget
from memfit.errors import TechniqueError
from memfit.measure.step import StepSettings, TrainingStep
from memfit.measure.tracker import MemoryTracker
from memfit.planning.inputs import FakeRuns, PlanRequest, gather
from memfit.planning.search import _Search
from memfit.techniques.accumulation import MicroBatchConfig
from memfit.techniques.base import Training
from memfit.techniques.optimizer_in_backward import (
    InBackwardOptimizer,
    OptimizerInBackward,
    OptimizerInBackwardConfig,
    one_parameter_optimizer,
)
from memfit.techniques.registry import apply_all
from memfit.timing import StepTimeModel

TIED = zoo.get("transformer", layers=2, d_model=64, heads=4, seq_len=16, vocab=200)
WIDE = zoo.get("mlp", depth=3, width=512, inputs=512)
OPTIMIZERS = {
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
}


def _steps(workload, model, optimizer, configs=()):
    training = apply_all(
        configs,
        Training(model=model, optimizer=optimizer, settings=StepSettings(), batch_size=4),
    )
    step = TrainingStep.for_workload(workload, model, training.optimizer, training.settings)
    return step, training


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_parameters_match_the_ordinary_step_bit_for_bit(name):
    make = OPTIMIZERS[name]
    torch.manual_seed(0)
    plain = TIED.build_model()
    inside = copy.deepcopy(plain)
    assert inside.lm_head.weight is inside.tok.weight  # one parameter used twice
    plain_step, _ = _steps(TIED, plain, make(plain.parameters()))
    step, training = _steps(TIED, inside, make(inside.parameters()), (OptimizerInBackwardConfig(),))
    unique = len(list(inside.parameters()))
    for n in range(3):
        batch = TIED.make_batch(4, "cpu")
        assert torch.equal(step(batch), plain_step(batch))
        # One update per parameter and backward: the tied weight's hook ran once.
        assert training.optimizer.updates == unique * (n + 1)
        assert all(p.grad is None for p in inside.parameters())
    for (key, a), (_, b) in zip(plain.named_parameters(), inside.named_parameters(), strict=True):
        assert torch.equal(a, b), key
    user = training.user_optimizer
    assert (
        user.state[inside.tok.weight]["exp_avg" if "adam" in name else "momentum_buffer"]
        is (
            training.optimizer.state[inside.tok.weight][
                "exp_avg" if "adam" in name else "momentum_buffer"
            ]
        )
    )


def _gradient_peaks(configs):
    """(tracker's gradient bytes at the step's peak, the most gradient bytes alive at once
    counted by hand from `.grad` tensors in a hook, the step's tracked peak)."""
    torch.manual_seed(0)
    model = WIDE.build_model()
    params = list(model.parameters())
    alive = []

    def count(_param):
        alive.append(
            sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
        )

    # Registered before the technique's hooks: sees each gradient before its update frees it.
    handles = [p.register_post_accumulate_grad_hook(count) for p in params]
    step, training = _steps(WIDE, model, torch.optim.Adam(params), configs)
    batch = WIDE.make_batch(4, "cpu")
    step(batch)  # the first step makes the optimizer's state
    alive.clear()
    tracker = MemoryTracker(keep_timeline=False)
    tracker.register_model(model)
    tracker.register_optimizer(training.optimizer)
    step.on_phase = lambda phase: setattr(tracker, "phase", phase)
    with tracker.track(model):
        step(batch)
    for h in handles:
        h.remove()
    result = tracker.result()
    most = max(cats["gradients"] for cats in result.phase_categories.values())
    return most, max(alive), result.peak_bytes


def test_gradients_nearly_vanish_by_the_tracker_and_by_hand():
    largest = max(p.numel() * 4 for p in WIDE.build_model().parameters())
    total = sum(p.numel() * 4 for p in WIDE.build_model().parameters())
    plain_tracked, plain_counted, plain_peak = _gradient_peaks(())
    tracked, counted, peak = _gradient_peaks((OptimizerInBackwardConfig(),))
    assert plain_tracked == plain_counted == total
    # Only the gradient being applied is alive: the largest parameter's at most.
    assert counted <= largest and tracked <= largest
    assert peak < plain_peak - (total - largest) * 0.9


def _context(workload, batch=8):
    request = PlanRequest(
        batch_size=batch, optimizer=None, device="cpu", room=Budget.parse("1MB").room(0)
    )
    model = StepTimeModel(fixed_s=0.01, per_sample_s=0.001, optimizer_s=0.01, source="given")
    return gather(workload, request, time_model=model, calibrate=False), request


def test_the_planner_never_combines_it_with_micro_batches():
    ctx, request = _context(WIDE)
    search = _Search(ctx, FakeRuns(WIDE, request))
    oib = OptimizerInBackwardConfig()
    assert search.compatible((oib,))
    assert not search.compatible((oib, MicroBatchConfig(micro_batch_size=4)))
    combos = [c for tier in search.tiers() for c in tier]
    assert any(oib in combo for combo in combos)


def test_clipping_is_refused_by_the_planner_and_by_apply():
    clipped = dataclasses.replace(WIDE, clip_grad_norm=1.0)
    ctx, request = _context(clipped)
    assert "clips" in OptimizerInBackward().supports(ctx)
    combos = [c for tier in _Search(ctx, FakeRuns(clipped, request)).tiers() for c in tier]
    assert not any(c.technique == "optimizer-in-backward" for combo in combos for c in combo)
    model = WIDE.build_model()
    with pytest.raises(TechniqueError, match="clip"):
        apply_all(
            (OptimizerInBackwardConfig(),),
            Training(
                model=model,
                optimizer=torch.optim.Adam(model.parameters()),
                settings=StepSettings(clip_grad_norm=1.0),
                batch_size=4,
            ),
        )


def test_the_ordinary_step_clips_as_the_workload_says():
    clipped = dataclasses.replace(WIDE, clip_grad_norm=0.01)
    torch.manual_seed(0)
    a = WIDE.build_model()
    b = copy.deepcopy(a)
    batch = WIDE.make_batch(4, "cpu")
    step, _ = _steps(clipped, a, torch.optim.SGD(a.parameters(), lr=1.0))
    step(batch)
    opt = torch.optim.SGD(b.parameters(), lr=1.0)
    WIDE.loss(b, batch).backward()
    norm = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.01)
    assert norm > 0.01  # the clip changed something
    opt.step()
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y)


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="needs torchao")
def test_low_bit_twins_get_one_parameter_optimizers_of_their_class():
    from torchao import optim as low_bit

    model = torch.nn.Linear(64, 64)
    for cls in (low_bit.Adam8bit, low_bit.AdamW8bit, low_bit.Adam4bit, low_bit.AdamW4bit):
        opt = cls(model.parameters(), lr=0.02, block_size=64)
        one = one_parameter_optimizer(opt, opt.param_groups[0], model.weight)
        assert type(one) is cls and one.block_size == 64 and one.is_adamw == opt.is_adamw
        assert float(one.param_groups[0]["lr"]) == pytest.approx(0.02)
        assert one.param_groups[0]["params"] == [model.weight]


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="needs torchao")
def test_plain_adam_under_bf16_weights_stays_adam_one_parameter_at_a_time():
    # bf16 weights stand torchao's AdamW-only class in for Adam by `is_adamw = False`, an
    # attribute no constructor takes: a one-parameter copy without it would decay weights
    # the AdamW way.
    from memfit.techniques.bf16_weights import BF16Weights, BF16WeightsConfig

    model = torch.nn.Linear(64, 64)
    user = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.1)
    training = Training(model=model, optimizer=user, settings=StepSettings(), batch_size=1)
    BF16Weights().apply(BF16WeightsConfig(), training)
    assert training.optimizer.is_adamw is False
    group = training.optimizer.param_groups[0]
    one = one_parameter_optimizer(training.optimizer, group, model.weight)
    assert one.is_adamw is False and one.bf16_stochastic_round is True


def test_a_scheduler_on_the_users_optimizer_steers_the_updates():
    model = torch.nn.Linear(8, 8)
    user = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapped = InBackwardOptimizer(user)
    assert wrapped.param_groups[0] is user.param_groups[0]
    model(torch.randn(2, 8)).sum().backward()
    moved = model.weight.detach().clone()
    for group in user.param_groups:
        group["lr"] = 0.0  # what a scheduler does
    model(torch.randn(2, 8)).sum().backward()
    assert torch.equal(model.weight, moved)
    wrapped.remove()
