"""bf16 weights: parameters and gradients in bf16, updated by torchao's Adam with stochastic
rounding; predicted bytes against the real optimizer's tensors; refused combinations."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from memfit.budget import Budget
from memfit.errors import TechniqueError
from memfit.estimator.fake import estimate
from memfit.measure.process import ProcessPeak, relax_allocator, stabilize_allocator
from memfit.measure.step import StepSettings, TrainingStep
from memfit.planning.inputs import FakeRuns, PlanRequest, gather
from memfit.planning.search import _Search, evaluate
from memfit.techniques.base import Training
from memfit.techniques.bf16_weights import (
    BF16Weights,
    BF16WeightsConfig,
    combination_problem,
    create_state,
    stochastic_rounding_twin,
)
from memfit.techniques.lowbit import LowBitStateConfig
from memfit.techniques.offload import OffloadStateConfig
from memfit.techniques.precision import PrecisionConfig
from memfit.techniques.registry import apply_all
from memfit.workload import Workload

ao = pytest.importorskip("torchao.optim")

WIDTH = 64  # one weight shape (torchao compiles its step once per shape): 4096 values,
# the smallest torchao quantizes, so 8-bit state is exercised too.
BATCH = 32


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(WIDTH, WIDTH, bias=False),
        nn.Tanh(),
        nn.Linear(WIDTH, WIDTH, bias=False),
        nn.Tanh(),
        nn.Linear(WIDTH, WIDTH, bias=False),
    )


def _batch(size: int, device="cpu", seed: int = 1):
    # A fixed random teacher: a regression the student can learn in a few dozen steps.
    # (Made here, not once at import: fake-tensor runs call this under a fake mode.)
    teacher = torch.randn(WIDTH, WIDTH, generator=torch.Generator().manual_seed(0)) / WIDTH**0.5
    x = torch.randn(size, WIDTH, generator=torch.Generator().manual_seed(seed))
    return x.to(device), torch.tanh(x @ teacher).to(device)


WORKLOAD = Workload(
    name="bf16-test-mlp",
    build_model=_model,
    make_batch=lambda size, device: _batch(size, device),
    loss_fn=nn.functional.mse_loss,
    build_optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2),
)


def _apply(configs, model, optimizer, precision="fp32"):
    return apply_all(
        configs,
        Training(
            model=model,
            optimizer=optimizer,
            settings=StepSettings(precision=precision),
            batch_size=BATCH,
        ),
    )


def _state_bytes(optimizer) -> int:
    """Bytes of the real optimizer's state, read off its tensors (and their subclasses')."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if hasattr(value, "__tensor_flatten__"):  # torchao's quantized state
                names, _ = value.__tensor_flatten__()
                total += sum(
                    getattr(value, n).numel() * getattr(value, n).element_size() for n in names
                )
            else:
                total += value.numel() * value.element_size()
    return total


def test_parameters_are_bf16_the_same_objects_and_batchnorm_stays_fp32():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.LayerNorm(8), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(
        [
            {"params": model[0].parameters(), "lr": 1e-2},
            {"params": [*model[1].parameters(), *model[2].parameters(), *model[3].parameters()]},
        ]
    )
    before = [id(p) for p in model.parameters()]
    training = _apply((BF16WeightsConfig(),), model, optimizer)
    assert [id(p) for p in model.parameters()] == before
    held = [id(p) for g in training.optimizer.param_groups for p in g["params"]]
    assert sorted(held) == sorted(before)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes == {
        "0.weight": torch.bfloat16,
        "0.bias": torch.bfloat16,
        "1.weight": torch.float32,  # BatchNorm keeps fp32 (its kernel's mixed-type form)
        "1.bias": torch.float32,
        "2.weight": torch.bfloat16,
        "2.bias": torch.bfloat16,
        "3.weight": torch.bfloat16,
        "3.bias": torch.bfloat16,
    }
    assert model[1].running_mean.dtype == torch.float32
    assert isinstance(training.optimizer, ao._AdamW) and training.optimizer.bf16_stochastic_round
    assert training.optimizer.param_groups[0] is optimizer.param_groups[0]
    # fp32 inputs are cast on the way in; the gradients are bf16 too.
    model.train()
    model(torch.randn(4, 8)).float().pow(2).mean().backward()
    assert model[0].weight.grad.dtype == torch.bfloat16
    assert model[1].weight.grad.dtype == torch.float32


def _train(configs, steps: int, optimizer_class=torch.optim.AdamW):
    torch.manual_seed(0)
    model = _model()
    training = _apply(configs, model, optimizer_class(model.parameters(), lr=1e-2))
    step = TrainingStep.for_workload(
        WORKLOAD, training.model, training.optimizer, training.settings
    )
    losses = [float(step(_batch(BATCH, seed=s))) for s in range(steps)]
    return losses, training


@pytest.fixture(scope="module")
def fp32_losses():
    return _train((), 40)[0]


@pytest.mark.parametrize("moments", [False, True], ids=["bf16-moments", "fp32-moments"])
def test_loss_falls_close_to_the_fp32_run(moments, fp32_losses):
    losses, training = _train((BF16WeightsConfig(fp32_moments=moments),), 40)
    final, reference = sum(losses[-10:]) / 10, sum(fp32_losses[-10:]) / 10
    assert final < 0.3 * losses[0]
    assert final == pytest.approx(reference, rel=0.08)
    wanted = torch.float32 if moments else torch.bfloat16
    assert all(s["exp_avg_sq"].dtype == wanted for s in training.optimizer.state.values())


@pytest.fixture(scope="module")
def context():
    request = PlanRequest(
        batch_size=BATCH, optimizer=None, device="cpu", room=Budget.parse("1TB").room(0)
    )
    ctx = gather(WORKLOAD, request)
    # bf16-weights is offered once bf16's compute time is measured; 1.0 stands in here.
    measured = dataclasses.replace(ctx.measurements, precision_slowdown={"bf16": 1.0})
    return dataclasses.replace(ctx, measurements=measured), FakeRuns(WORKLOAD, request)


@pytest.mark.parametrize(
    "configs",
    [
        (BF16WeightsConfig(),),
        (BF16WeightsConfig(fp32_moments=True),),
        (LowBitStateConfig(bits=8), BF16WeightsConfig()),
    ],
    ids=["bf16-moments", "fp32-moments", "8bit"],
)
def test_predicted_bytes_equal_the_real_tensors(configs, context):
    predicted = evaluate(*context, configs).prediction.phases["optimizer_step"]
    losses, training = _train(configs, 2)
    params = list(training.model.parameters())
    real_params = sum(p.numel() * p.element_size() for p in params)
    assert real_params == 2 * sum(p.numel() for p in params)  # bf16: 2 bytes a value
    assert predicted["parameters"] == real_params
    assert predicted["gradients"] == real_params
    assert predicted["optimizer"] == _state_bytes(training.optimizer)


def test_the_compiled_step_holds_no_temporaries():
    # What the fake run's stand-in step assumes: torchao's bf16 step is one fused kernel.
    torch.manual_seed(0)
    param = nn.Parameter(torch.randn(1024, 1024).bfloat16())
    param.grad = torch.randn_like(param)
    optimizer = stochastic_rounding_twin(torch.optim.AdamW([param]))
    create_state(optimizer)
    for _ in range(2):
        optimizer.step()
    stable = stabilize_allocator()
    try:
        process = ProcessPeak("cpu")
        process.start()
        optimizer.step()
        rise = process.stop() - process.baseline_bytes
    finally:
        if stable:
            relax_allocator()
    assert rise < 0.1 * param.numel() * 4  # under a tenth of one fp32 copy


def test_it_is_lossy_not_offered_when_exact(context):
    ctx, runs = context

    def names(c):
        return {x.technique for tier in _Search(c, runs).tiers() for combo in tier for x in combo}

    assert "bf16-weights" in names(ctx)
    exact = dataclasses.replace(ctx, request=dataclasses.replace(ctx.request, exact=True))
    assert "bf16-weights" not in names(exact)
    assert not BF16Weights().is_exact(BF16WeightsConfig())


def test_fake_run_counts_the_state_at_two_bytes():
    e = estimate(WORKLOAD, BATCH, None, techniques=(BF16WeightsConfig(),))
    n = 3 * WIDTH * WIDTH
    assert e.categories["parameters"] == 2 * n
    # Two bf16 moments and one fp32 step counter per tensor.
    assert e.phase_categories["optimizer_step"]["optimizer"] == 2 * 2 * n + 3 * 4


@pytest.mark.parametrize(
    ("others", "match"),
    [
        ({"precision": PrecisionConfig(dtype="fp16")}, "fp16"),
        ({"precision": PrecisionConfig(dtype="bf16")}, "adds nothing"),
        ({"offload": OffloadStateConfig(max_resident_bytes=8 * 2**20)}, "offload"),
    ],
)
def test_bad_combinations_are_refused_by_the_planner(others, match):
    assert match in combination_problem(BF16WeightsConfig(), others)
    assert (
        combination_problem(BF16WeightsConfig(), {"low-bit-state": LowBitStateConfig(bits=8)})
        is None
    )
    assert "low-bit" in combination_problem(
        BF16WeightsConfig(fp32_moments=True), {"low-bit-state": LowBitStateConfig(bits=8)}
    )


def test_bad_inputs_are_refused_by_apply():
    model = _model()
    with pytest.raises(TechniqueError, match="Adam"):
        _apply((BF16WeightsConfig(),), model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TechniqueError, match="autocast"):
        _apply(
            (PrecisionConfig(dtype="bf16"), BF16WeightsConfig()),
            model,
            torch.optim.Adam(model.parameters()),
        )
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, WIDTH)).sum().backward()
    optimizer.step()
    with pytest.raises(TechniqueError, match="before the first step"):
        _apply((BF16WeightsConfig(),), model, optimizer)
