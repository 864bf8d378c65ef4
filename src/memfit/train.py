"""Train under a plan: `fit` plans for a budget, applies the plan and runs the loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memfit.apply import PlannedStep
from memfit.budget import Budget, format_bytes
from memfit.errors import PlanError
from memfit.planning import plan as make_plan
from memfit.techniques.accumulation import batch_size_of
from memfit.workload import Workload, load_workload

__all__ = ["FitResult", "PlannedStep", "fit", "training_progress", "workload_like_data"]


@dataclass
class FitResult:
    """What training under a plan did: the plan, the loss curve, and the measured peak."""

    plan: Any
    model: nn.Module
    losses: list[float] = field(default_factory=list)
    epochs: int = 0
    seconds: float = 0.0
    samples: int = 0
    measured_peak_bytes: int = 0
    """Highest live tensor bytes over the tracked updates (the first of each epoch)."""

    @property
    def within_budget(self) -> bool:
        return self.plan.room.within(self.measured_peak_bytes)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0


def fit(
    workload_or_model: Workload | str | nn.Module,
    data,
    *,
    budget: Budget | str,
    epochs: int = 1,
    batch_size: int | None = None,
    optimizer: str | None = None,
    lr: float | None = None,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    exact: bool = False,
    device: str = "cpu",
    reserve_bytes: int | None = None,
    progress: bool = True,
    seed: int = 0,
) -> FitResult:
    """Plan for `budget`, apply the plan, and train for `epochs` on `data`.

    `data` is `(x, y)` tensors (batched and shuffled here) or any iterable of
    `(inputs, targets)` batches, such as a DataLoader.
    """
    from memfit.optim import build_optimizer, make_optimizer

    torch.manual_seed(seed)
    workload, model = _workload_and_model(workload_or_model, data, loss_fn, batch_size)
    batch_size = batch_size or workload.default_batch_size
    the_plan = make_plan(
        workload,
        budget,
        batch_size,
        exact,
        optimizer=optimizer,
        device=device,
        reserve_bytes=reserve_bytes,
    )
    if not the_plan.fits:
        raise PlanError(
            f"no plan fits {the_plan.budget}: smallest peak "
            f"{format_bytes(the_plan.predicted_peak_bytes)} against "
            f"{format_bytes(the_plan.usable_bytes)} usable; {the_plan.notes[-1]}"
        )
    model.to(device).train()
    opt = (
        make_optimizer(optimizer or "adam", model.parameters(), lr)
        if lr is not None
        else build_optimizer(workload, optimizer, model)
    )
    step = the_plan.apply(model, opt, loss_fn)
    result = FitResult(plan=the_plan, model=model)
    start = time.perf_counter()
    from memfit import progress as display

    with display.task("training") if progress else nullcontext(None) as bar:
        for epoch in range(epochs):
            for i, batch in enumerate(_batches(data, batch_size, seed + epoch, device)):
                if i == 0:
                    loss, peak = step.measure(batch)
                    result.measured_peak_bytes = max(result.measured_peak_bytes, peak)
                else:
                    loss = step(batch)
                result.losses.append(loss)
                result.samples += batch_size_of(batch)
                if bar:
                    rate = result.samples / (time.perf_counter() - start)
                    bar.update(
                        completed=bar.completed + 1,
                        description=(
                            f"epoch {epoch + 1}/{epochs} loss {loss:.4f} · {rate:,.0f} samples/s · "
                            f"peak {format_bytes(result.measured_peak_bytes)} of "
                            f"{format_bytes(the_plan.usable_bytes)}"
                        ),
                    )
            result.epochs = epoch + 1
    result.seconds = time.perf_counter() - start
    return result


def training_progress(console=None):
    """The progress bar `fit` and the demo show: description, bar, count, time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _batches(data, batch_size: int, seed: int, device: str) -> Iterable:
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        x, y = data
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            yield x[idx].to(device), y[idx].to(device)
        return
    yield from data


def _workload_and_model(workload_or_model, data, loss_fn, batch_size):
    if isinstance(workload_or_model, nn.Module):
        model = workload_or_model
        if loss_fn is None:
            raise PlanError("fit(model, ...) needs loss_fn=...; or pass a memfit.Workload")
        workload = workload_like_data(model, data, loss_fn, batch_size or 32)
        return workload, model
    workload = load_workload(workload_or_model)
    return workload, workload.build_model()


def workload_like_data(model: nn.Module, data, loss_fn, batch_size: int) -> Workload:
    """A Workload whose batches look like `data`'s (shapes, dtypes, value ranges)."""
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        sample = data
    else:
        sample = next(iter(data))
    x, y = sample
    x_high = int(x.max()) + 1 if not x.is_floating_point() else None
    y_high = int(y.max()) + 1 if y is not None and not y.is_floating_point() else None

    def like(t: torch.Tensor, b: int, device, high):
        shape = (b, *t.shape[1:])
        if t.is_floating_point():
            return torch.randn(shape, dtype=t.dtype, device=device)
        return torch.randint(0, max(high or 2, 1), shape, dtype=t.dtype, device=device)

    return Workload(
        name=type(model).__name__,
        build_model=lambda: _fresh_copy(model),
        make_batch=lambda b, device="cpu": (
            like(x, b, device, x_high),
            like(y, b, device, y_high) if y is not None else None,
        ),
        loss_fn=loss_fn,
        default_batch_size=batch_size,
    )


def _fresh_copy(model: nn.Module) -> nn.Module:
    """The user's model for planning: under fake tensors, a copy whose tensors are fake.

    Only shapes are copied (no data), so planning a big model costs no second copy of it.
    """
    import copy

    from torch._guards import detect_fake_mode

    from memfit.estimator.fake_build import fake_copy

    mode = detect_fake_mode()
    return copy.deepcopy(model) if mode is None else fake_copy(model, mode)
