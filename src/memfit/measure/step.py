"""The one training step, split into the phases memory is reported by.

`profile`, `estimate`, a planned step, a sharded step and the demo all run `TrainingStep`.
Techniques change it through `StepSettings` (micro-batches, autocast, a gradient scaler,
contexts around each micro-batch, the optimizer step moved into backward), never by
writing a loop of their own, so what is predicted is what runs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memfit.workload import Batch, Workload, call_model, loss_of_output, split_inputs

PhaseHook = Callable[[str], None]
LossOf = Callable[[nn.Module, Batch], torch.Tensor]


@dataclass(kw_only=True)
class StepSettings:
    """How one update runs; techniques' `apply` set these."""

    micro_batch_size: int | None = None
    """Split each batch into micro-batches of this many samples (None: one pass)."""
    precision: str = "fp32"
    """`fp32`, or `bf16` / `fp16` autocast around the forward pass."""
    device: str = "cpu"
    grad_scaler: Any = None
    """A `torch.amp.GradScaler` (fp16 needs one: its gradients underflow without it)."""
    micro_batch_contexts: list[Callable[[], AbstractContextManager]] = field(default_factory=list)
    """Entered around each micro-batch's forward and backward (for example saving
    activations to host memory)."""
    optimizer_in_backward: bool = False
    """Parameters are updated by hooks as their gradients arrive: no optimizer step after."""
    count_items: Callable[[Batch], Any] | None = None
    """Items a batch's loss averages over (see `Workload.count_items`); None: samples."""
    clip_grad_norm: float | None = None
    """Clip the gradients' total norm to this before the optimizer step (see
    `Workload.clip_grad_norm`); None: no clipping."""
    reduce_every_micro_batch: bool = False
    """Sharded models: reduce gradients after every micro-batch (less memory, more traffic)
    instead of once after the last."""


def autocast_context(precision: str, device: str):
    """bf16/fp16 autocast for the forward pass; fp32 runs as is."""
    if precision == "fp32":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type=device_type, dtype=dtype)


def loss_of(loss_fn: Callable[[Any, Any], torch.Tensor] | None, name: str = "the model") -> LossOf:
    """`loss(model, batch)` from a `loss_fn(output, targets)`, or the model's own loss."""

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        inputs, targets = split_inputs(batch)
        output = call_model(model, inputs)
        return loss_of_output(output, name) if loss_fn is None else loss_fn(output, targets)

    return loss


class TrainingStep:
    """One optimizer update over a batch: micro-batches, autocast, backward, the optimizer step.

    Calling it returns the batch's loss as a detached tensor (the mean over the batch,
    however it was split). `on_phase` is told each phase as it begins: `forward`,
    `backward` (once per micro-batch), `optimizer_step`, `zero_grad`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        loss: LossOf,
        settings: StepSettings | None = None,
        *,
        on_phase: PhaseHook | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.loss = loss
        self.settings = settings or StepSettings()
        self.on_phase = on_phase
        self.around_optimizer_step: Callable[[], AbstractContextManager] | None = None
        """Wraps the optimizer step (measuring uses it to pause around compiled steps)."""

    @classmethod
    def for_workload(
        cls,
        workload: Workload,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        settings: StepSettings | None = None,
        **kwargs,
    ) -> TrainingStep:
        settings = settings or StepSettings()
        if settings.count_items is None:
            settings.count_items = workload.count_items
        if settings.clip_grad_norm is None:
            settings.clip_grad_norm = workload.clip_grad_norm
        return cls(model, optimizer, workload.loss, settings, **kwargs)

    def _mark(self, phase: str) -> None:
        if self.on_phase is not None:
            self.on_phase(phase)

    def __call__(self, batch: Batch) -> torch.Tensor:
        from memfit.techniques.accumulation import micro_batches

        s = self.settings
        pieces = micro_batches(batch, s.micro_batch_size, s.count_items)
        # FSDP: reduce gradients across ranks once, on the last micro-batch.
        sharded = hasattr(self.model, "set_requires_gradient_sync") and len(pieces) > 1
        total = None
        for index, (piece, weight) in enumerate(pieces):
            if sharded:
                last = index == len(pieces) - 1
                self.model.set_requires_gradient_sync(last or s.reduce_every_micro_batch)
            with ExitStack() as stack:
                for make in s.micro_batch_contexts:
                    stack.enter_context(make())
                self._mark("forward")
                with autocast_context(s.precision, s.device):
                    loss = self.loss(self.model, piece)
                    if weight is not None:
                        # Weighted by its share of the batch's items, the micro-batches'
                        # gradients add up to the full batch's.
                        loss = loss * weight
                self._mark("backward")
                (s.grad_scaler.scale(loss) if s.grad_scaler else loss).backward()
            detached = loss.detach()
            total = detached if total is None else total + detached
            del loss
        self._mark("optimizer_step")
        if self.optimizer is not None and not s.optimizer_in_backward:
            with (self.around_optimizer_step or nullcontext)():
                if s.clip_grad_norm is not None:
                    self._clip_gradients(s.clip_grad_norm)
                if s.grad_scaler:
                    s.grad_scaler.step(self.optimizer)
                    s.grad_scaler.update()
                else:
                    self.optimizer.step()
        self._mark("zero_grad")
        if self.optimizer is not None and not s.optimizer_in_backward:
            self.optimizer.zero_grad(set_to_none=True)
        return total

    def _clip_gradients(self, max_norm: float) -> None:
        s = self.settings
        if s.grad_scaler:
            # The norm is the true gradients' norm: unscale first (the scaler's step then
            # knows they are unscaled and does not unscale again).
            s.grad_scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def training_step(
    workload: Workload,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    on_phase: PhaseHook | None = None,
) -> torch.Tensor:
    """Forward, backward, optimizer step, zero_grad in one pass; returns the detached loss."""
    settings = StepSettings(precision=precision, device=device)
    step = TrainingStep.for_workload(workload, model, optimizer, settings, on_phase=on_phase)
    return step(batch)


def batch_tensors(batch: Batch) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []

    def walk(value):
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (tuple, list)):
            for v in value:
                walk(v)

    walk(batch)
    return out
