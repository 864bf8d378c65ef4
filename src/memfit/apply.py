"""Applying a plan: its techniques change a model and optimizer; `PlannedStep` runs updates."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from memfit.errors import PlanError
from memfit.measure.process import ProcessPeak
from memfit.measure.step import StepSettings, TrainingStep, batch_tensors, loss_of
from memfit.measure.tracker import MemoryTracker, TrackerResult, optimizer_state_tensors
from memfit.techniques.base import Training
from memfit.techniques.registry import apply_all

if TYPE_CHECKING:
    from memfit.planning.types import Plan


def apply_plan(
    plan: Plan,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
) -> PlannedStep:
    """Apply `plan`'s techniques to `model` and `optimizer`; returns the step that runs them."""
    workload = plan._workload
    if loss_fn is None and workload is None:
        raise PlanError(
            "pass loss_fn=...: this plan was not made from a Workload here (it was loaded "
            "or received from another process)"
        )
    if getattr(model, "_memfit_plan", None) is not None:
        raise PlanError(
            "this model already has a plan applied; build a fresh model to apply another"
        )
    settings = StepSettings(
        device=plan.device,
        count_items=workload.count_items if workload else None,
        clip_grad_norm=workload.clip_grad_norm if workload else None,
    )
    training = apply_all(
        plan.settings.configs,
        Training(
            model=model,
            optimizer=optimizer,
            settings=settings,
            batch_size=plan.batch_size,
            state_dir=plan.state_dir,
        ),
    )
    model._memfit_plan = plan.settings
    loss = workload.loss if loss_fn is None else loss_of(loss_fn, plan.workload)
    step = PlannedStep.__new__(PlannedStep)
    TrainingStep.__init__(step, training.model, training.optimizer, loss, settings)
    step.user_optimizer = training.user_optimizer
    step._compiled = False
    return step


class PlannedStep(TrainingStep):
    """One optimizer update over a batch as a plan says; `step(batch)` returns the loss.

    `PlannedStep(model, optimizer, loss_fn, micro_batch_size=..., precision=...)` builds one
    by hand, without a plan.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None,
        micro_batch_size: int | None = None,
        precision: str = "fp32",
        device: str = "cpu",
    ):
        from memfit.techniques.precision import grad_scaler

        settings = StepSettings(
            micro_batch_size=micro_batch_size,
            precision=precision,
            device=device,
            grad_scaler=grad_scaler(precision, device),
        )
        super().__init__(model, optimizer, loss_of(loss_fn), settings)
        self.user_optimizer = optimizer
        self._compiled = False

    @property
    def micro_batch_size(self) -> int | None:
        return self.settings.micro_batch_size

    def __call__(self, batch) -> float:
        loss = super().__call__(batch)
        if self.user_optimizer is not self.optimizer:
            # A scheduler built on the user's optimizer checks that its step ran first.
            self.user_optimizer._opt_called = True
        return float(loss)

    def measure(self, batch) -> tuple[float, int]:
        """Run one update under the tracker: (loss, peak live tensor bytes)."""
        loss, result = self.measure_result(batch)
        return loss, result.peak_bytes

    def measure_result(self, batch, process: ProcessPeak | None = None):
        """Run one update under the tracker: (loss, the tracker's whole result).

        With `process`, the process's own high-water mark is read phase by phase too.
        """
        tracker = MemoryTracker(keep_timeline=False)
        tracker.register_model(self.model)
        tracker.register(optimizer_state_tensors(self.optimizer), "optimizer")
        tracker.register(batch_tensors(batch), "other")

        def on_phase(phase: str) -> None:
            if process is not None:
                process.next_phase(phase)
            tracker.phase = phase

        self.on_phase = on_phase
        if type(self.optimizer).__module__.startswith("torchao"):
            self.around_optimizer_step = self._paused_compiled_step(tracker)
        try:
            with tracker.track(self.model):
                loss = self(batch)
        finally:
            self.on_phase = None
            self.around_optimizer_step = None
        return loss, tracker.result()

    def _paused_compiled_step(self, tracker: MemoryTracker):
        @contextmanager
        def paused_step():
            process = ProcessPeak(self.settings.device)
            process.start()
            with tracker.paused():
                yield
            process.stop()
            # State created inside the compiled step was not seen: count it now, and its
            # temporaries as the process saw them (RSS or the CUDA allocator).
            before = tracker.current_bytes
            tracker.register(optimizer_state_tensors(self.optimizer), "optimizer")
            new_state = tracker.current_bytes - before
            if self._compiled:
                tracker.add_transient(process.peak_bytes - process.baseline_bytes - new_state)
            # The first call also compiles the step's kernels: that is the compiler's
            # memory (the runtime reserve's business), not the step's, so it is not added.
            self._compiled = True

        return paused_step


__all__ = ["PlannedStep", "TrackerResult", "apply_plan"]
