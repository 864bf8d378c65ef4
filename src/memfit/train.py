"""Train under a plan: `PlannedStep` runs one effective-batch update, `fit` is the whole loop."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memfit.budget import Budget, format_bytes
from memfit.errors import PlanError
from memfit.measure.process import ProcessPeak
from memfit.measure.step import batch_tensors
from memfit.measure.tracker import MemoryTracker, TrackerResult, optimizer_state_tensors
from memfit.techniques import checkpointing as ckpt
from memfit.techniques import lowbit
from memfit.techniques.accumulation import batch_size_of, micro_batch_weights, split_batch
from memfit.techniques.precision import autocast, grad_scaler
from memfit.workload import (
    Workload,
    call_model,
    load_workload,
    loss_of_output,
    split_inputs,
)


class PlannedStep:
    """One optimizer update over a batch, as the plan says: micro-batches, autocast, etc.

    `step(batch)` takes `(inputs, targets)`, returns the batch's mean loss as a float.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None,
        micro_batch_size: int | None,
        precision: str = "fp32",
        device: str = "cpu",
    ):
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.micro_batch_size = micro_batch_size
        self.precision = precision
        self.device = device
        self.scaler = grad_scaler(precision, device)
        self.on_phase: Callable[[str], None] | None = None
        self.around_optimizer_step: Callable[[], Any] | None = None
        self.count_items: Callable[[Any], int] | None = None
        self._compiled = False

    @classmethod
    def build(
        cls,
        plan,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Any, Any], torch.Tensor],
    ) -> PlannedStep:
        s = plan.settings
        # Checkpointing first: it changes module forwards, which later wrappers do not touch.
        if s.checkpoint_segments:
            for name in s.checkpointed:
                ckpt.checkpoint_segments(model, name, s.checkpoint_segments)
        elif s.checkpointed:
            ckpt.checkpoint_modules(model, s.checkpointed)
        if s.optimizer_state in ("8bit", "4bit"):
            optimizer = lowbit.apply(optimizer, s.optimizer_state)
        elif s.optimizer_state == "offload":
            from memfit.techniques import offload

            state_dir = tempfile.mkdtemp(prefix="memfit-offload-", dir=plan.state_dir)
            config = offload.OffloadConfig(state_dir=state_dir)
            if s.offload_resident_bytes:
                config.max_resident_bytes = s.offload_resident_bytes
            optimizer = offload.apply(optimizer, config)
        if getattr(plan, "nodes", 1) > 1:
            model, optimizer = _shard_for_plan(plan, model, optimizer)
        micro = s.micro_batch_size if s.accumulation_steps > 1 else None
        step = cls(model, optimizer, loss_fn, micro, s.precision, plan.device)
        workload = getattr(plan, "_workload", None)
        step.count_items = workload.count_items if workload is not None else None
        return step

    def __call__(self, batch) -> float:
        mark = self.on_phase or (lambda _p: None)
        total = batch_size_of(batch)
        pieces = (
            split_batch(batch, self.micro_batch_size) if self.micro_batch_size else [(batch, total)]
        )
        weights = micro_batch_weights(pieces, self.count_items)
        loss_sum = 0.0
        sharded = hasattr(self.model, "set_requires_gradient_sync")
        for index, ((piece, _size), weight) in enumerate(zip(pieces, weights, strict=True)):
            if weight == 0 and not sharded:
                continue  # nothing the loss counts (every label ignored): adds no gradient
            if sharded:
                # FSDP: reduce gradients across ranks once, on the last micro-batch.
                self.model.set_requires_gradient_sync(index == len(pieces) - 1)
            inputs, targets = split_inputs(piece)
            mark("forward")
            with autocast(self.precision, self.device):
                output = call_model(self.model, inputs)
                loss = self.loss_fn(output, targets) if self.loss_fn else loss_of_output(output)
                # Weight each micro-batch by its share of the items the loss averages over:
                # the accumulated gradient is then the full batch's gradient.
                loss = loss * weight
            mark("backward")
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += float(loss.detach())
            del loss
        mark("optimizer_step")
        with (self.around_optimizer_step or nullcontext)():
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        mark("zero_grad")
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum

    def measure(self, batch) -> tuple[float, int]:
        """Run one update under the tracker: (loss, peak live tensor bytes)."""
        loss, result = self.measure_result(batch)
        return loss, result.peak_bytes

    def measure_result(self, batch) -> tuple[float, TrackerResult]:
        """Run one update under the tracker: (loss, the tracker's whole result)."""
        tracker = MemoryTracker(keep_timeline=False)
        tracker.register_model(self.model)
        tracker.register(optimizer_state_tensors(self.optimizer), "optimizer")
        tracker.register(batch_tensors(batch), "other")

        def on_phase(phase: str) -> None:
            tracker.phase = phase

        self.on_phase = on_phase
        compiled_step = type(self.optimizer).__module__.startswith("torchao")
        if compiled_step:

            @contextmanager
            def paused_step():
                process = ProcessPeak(self.device)
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

            self.around_optimizer_step = paused_step
        try:
            with tracker.track(self.model):
                loss = self(batch)
        finally:
            self.on_phase = None
            self.around_optimizer_step = None
        return loss, tracker.result()


def _shard_for_plan(plan, model: nn.Module, optimizer: torch.optim.Optimizer):
    """Shard `model` over the running process group; rebuild the optimizer over the shards."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() != plan.nodes:
        raise PlanError(
            f"this plan shards over {plan.nodes} ranks: start the script with torchrun "
            f"--nproc-per-node/--nnodes giving {plan.nodes} processes and call "
            "memfit.distributed.setup() before plan.apply"
        )
    if plan.settings.optimizer_state == "offload":
        raise PlanError(
            "offloaded optimizer state does not combine with sharding here; "
            "plan with --no-offload or a single node"
        )
    from memfit.distributed.shard import shard

    shard(model)
    # fully_shard turns the parameters into DTensors: the old optimizer holds stale ones.
    return model, type(optimizer)(model.parameters(), **optimizer.defaults)


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
        return self.measured_peak_bytes <= self.plan.usable_bytes

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
    optimizer: str = "adam",
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
    from memfit.optim import make_optimizer
    from memfit.planner import plan as make_plan

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
    step = the_plan.apply(
        model, make_optimizer(optimizer, model.parameters(), lr), loss_fn or workload.loss_fn
    )
    result = FitResult(plan=the_plan, model=model)
    start = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task("training", total=None) if bar else None
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
                        task,
                        advance=1,
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


def _progress(enabled: bool):
    return training_progress() if enabled else nullcontext(None)


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
    from itertools import chain

    from torch._guards import detect_fake_mode

    mode = detect_fake_mode()
    if mode is None:
        return copy.deepcopy(model)
    memo: dict[int, Any] = {}
    for tensor in chain(model.parameters(), model.buffers()):
        fake = mode.from_tensor(tensor)
        memo[id(tensor)] = (
            nn.Parameter(fake, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else fake
        )
    return copy.deepcopy(model, memo)
