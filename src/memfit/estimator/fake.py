"""`estimate`: a training step's memory from a run on fake tensors.

The real forward, backward and optimizer step run under FakeTensorMode: every
op computes its output's shape, dtype and storage size and nothing else, so a
LLaMA-7B step is examined in seconds with a few hundred MB. The tracker is the
same one `profile` uses, so an estimate and a measurement count the same things.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    UnsupportedOperatorException,
)

from memfit.device import check_device
from memfit.errors import EstimateError, MemfitError
from memfit.estimator.fake_build import build_fake_model
from memfit.estimator.lowbit import LOW_BIT, low_bit_state_bytes
from memfit.measure.profile import (
    _check_precision,
    module_rows,
    profile_from,
    run_tracked_step,
)
from memfit.measure.step import StepSettings, TrainingStep
from memfit.measure.tracker import TrackerResult
from memfit.memory_profile import MemoryProfile
from memfit.optim import OPTIMIZERS, build_optimizer, optimizer_label
from memfit.techniques.accumulation import prefill_gradients
from memfit.techniques.base import TechniqueConfig, Training
from memfit.techniques.registry import apply_all
from memfit.workload import Workload, load_workload

_FAKE_FAILURES = (
    DataDependentOutputException,
    DynamicOutputShapeException,
    UnsupportedOperatorException,
)


def estimate(
    workload: Workload | str,
    batch_size: int | None = None,
    optimizer: str | None = None,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    prepare: Callable[[torch.nn.Module], object] | None = None,
    gradients_present: bool = False,
    techniques: Sequence[TechniqueConfig] = (),
    optimizer_step: bool = True,
) -> MemoryProfile:
    """Estimate one training step without allocating it (`method="estimated"`).

    `techniques` are a plan's settings: those that run on fake tensors are applied by
    their own `apply` (checkpointing, precision...; micro-batching runs the last
    micro-batch with every gradient present); the others' byte effects are the
    planner's business. `prepare(model)` changes the fake model before the step;
    `gradients_present` starts the step with every gradient allocated;
    `optimizer_step=False` runs forward and backward only (the optimizer's state is
    still there, and counted).

        >>> from memfit import zoo
        >>> e = estimate(zoo.get("llama-7b"), batch_size=1)
        >>> round(e.categories["parameters"] / 4 / 1e9, 2)   # billions of fp32 parameters
        6.74
    """
    workload = load_workload(workload)
    batch_size = batch_size or workload.default_batch_size
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise EstimateError(
            f"cannot estimate optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
        )
    check_device(device, fake=True)
    _check_precision(precision, device)
    # Low-bit states are replaced by their byte count below: run the step with Adam.
    run_optimizer = "adamw" if optimizer in LOW_BIT else optimizer
    stage = "building the model"
    try:
        with FakeTensorMode(allow_non_fake_inputs=False):
            torch.manual_seed(0)
            model = build_fake_model(workload, device)
            model.train()
            if prepare is not None:
                prepare(model)
            opt = build_optimizer(workload, run_optimizer, model)
            stage = "creating the optimizer state"
            _create_optimizer_state(model, opt)
            settings = StepSettings(precision=precision, device=device)
            training = apply_all(
                techniques,
                Training(
                    model=model,
                    optimizer=opt,
                    settings=settings,
                    batch_size=batch_size,
                    fake=True,
                ),
            )
            if gradients_present or training.gradients_present:
                prefill_gradients(model)
            stage = "running the training step"
            batch = workload.make_batch(training.run_batch_size or batch_size, device)
            step = TrainingStep.for_workload(
                workload, training.model, training.optimizer if optimizer_step else None, settings
            )
            result, _ = run_tracked_step(
                workload, training.model, training.optimizer, batch, device=device, step=step
            )
            rows = module_rows(training.model, result)
            if optimizer in LOW_BIT:
                params = [p for p in model.parameters() if p.requires_grad]
                _swap_optimizer_bytes(result, low_bit_state_bytes(params, optimizer))
    except MemfitError:
        raise
    except _FAKE_FAILURES as exc:
        raise EstimateError(
            f"{workload.name} cannot be estimated on fake tensors while {stage} "
            f"({type(exc).__name__}: an operation whose output depends on tensor values"
            f"{_operation(exc)}); measure it with `memfit profile` at a small batch size"
        ) from exc
    except Exception as exc:
        raise EstimateError(
            f"{workload.name} failed on fake tensors while {stage} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); measure it with "
            "`memfit profile` at a small batch size, or set MEMFIT_DEBUG=1 for the traceback"
        ) from exc
    label = optimizer_label(workload, optimizer)
    profile = profile_from(
        result, "estimated", workload, batch_size, label, precision, device, rows
    )
    if training.run_batch_size is not None:
        profile.config["run_batch_size"] = training.run_batch_size
    return profile


def _operation(exc: Exception) -> str:
    func = getattr(exc, "func", None)
    return f" in {func}" if func is not None else ""


def _create_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    # One step on zero gradients creates the state a real warm-up step would, without
    # running a forward and backward pass that teach nothing.
    for param in model.parameters():
        if param.requires_grad:
            param.grad = torch.zeros_like(param)
    # The multi-tensor kernels make the same state in far fewer (Python-dispatched) calls;
    # the step that is measured afterwards runs with the optimizer's own setting again.
    saved = [group.get("foreach") for group in opt.param_groups]
    for group in opt.param_groups:
        if "foreach" in group:
            group["foreach"] = True
    try:
        opt.step()
    finally:
        for group, value in zip(opt.param_groups, saved, strict=True):
            if "foreach" in group:
                group["foreach"] = value
    opt.zero_grad(set_to_none=True)


def _swap_optimizer_bytes(result: TrackerResult, low_bit_bytes: int) -> None:
    # Optimizer state lives through the whole step unchanged in size, so replacing its
    # byte count shifts every moment of the step by the same amount: the peak stays
    # where it was and each total moves by the difference.
    delta = low_bit_bytes - result.categories["optimizer"]
    result.categories["optimizer"] = low_bit_bytes
    result.peak_bytes += delta
    result.phase_peaks = {k: (v + delta if v else v) for k, v in result.phase_peaks.items()}
    result.timeline = [(total + delta, phase) for total, phase in result.timeline]
