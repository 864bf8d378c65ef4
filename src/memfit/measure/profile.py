"""`profile`: run a real training step and measure where its memory goes."""

from __future__ import annotations

import gc
import time

import torch
from torch import nn

from memfit.device import check_device
from memfit.errors import MeasureError
from memfit.measure.bytes import iter_storages
from memfit.measure.process import (
    ProcessPeak,
    env_is_stable,
    relax_allocator,
    stabilize_allocator,
)
from memfit.measure.step import StepSettings, TrainingStep, batch_tensors, training_step
from memfit.measure.tracker import MemoryTracker, TrackerResult
from memfit.memory_profile import MemoryProfile, ModuleRow
from memfit.optim import build_optimizer, optimizer_label
from memfit.workload import Workload, load_workload

PRECISIONS = ("fp32", "bf16", "fp16")


def profile(
    workload: Workload | str,
    batch_size: int | None = None,
    optimizer: str | None = None,
    *,
    precision: str = "fp32",
    device: str | None = None,
    seed: int = 0,
    force: bool = False,
) -> MemoryProfile:
    """Measure one real training step: peak, categories at the peak, per-module rows, process peak.

    A warm-up step runs first so optimizer state exists, as it does in every step after the first.
    A step that could be too big for this machine is estimated on fake tensors first and
    refused with MeasureError when larger than the memory available (`force=True` runs it
    anyway): a notebook's kernel would otherwise die.

        >>> from memfit import zoo
        >>> p = profile(zoo.get("mlp", depth=2, width=32, inputs=16), batch_size=8, optimizer="sgd")
        >>> p.categories["optimizer"] == p.categories["parameters"]   # one momentum buffer each
        True
    """
    workload = load_workload(workload)
    batch_size = batch_size or workload.default_batch_size
    device = check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _check_precision(precision, device)
    if not force:
        _refuse_what_cannot_fit(workload, batch_size, optimizer, precision, device)
    stabilized = stabilize_allocator() and not env_is_stable()
    torch.manual_seed(seed)
    with torch.device(device):
        model = workload.build_model()
    model.train()
    opt = build_optimizer(workload, optimizer, model)
    optimizer = optimizer_label(workload, optimizer)
    try:
        training_step(
            workload,
            model,
            opt,
            workload.make_batch(batch_size, device),
            precision=precision,
            device=device,
        )
        batch = workload.make_batch(batch_size, device)
        process = ProcessPeak(device)
        gc.collect()
        process.start()
        result, step_s = run_tracked_step(
            workload,
            model,
            opt,
            batch,
            precision=precision,
            device=device,
            time_modules=True,
            process=process,
        )
        process.stop()
        # What the process held before the step that was not tensors: the interpreter,
        # libraries, and whatever the warm-up step initialised lazily (thread pools,
        # kernel caches). The step's own peak is the high-water mark above that.
        non_tensor_bytes = process.baseline_bytes - result.start_bytes
    except torch.OutOfMemoryError as exc:
        raise MeasureError(
            f"{workload.name} ran out of memory at batch size {batch_size}; "
            "try `memfit estimate` (allocates nothing) or a smaller --batch-size"
        ) from exc
    finally:
        if stabilized:
            # Measuring is over: give the rest of the process its fast allocator back.
            relax_allocator()
    return profile_from(
        result,
        "measured",
        workload,
        batch_size,
        optimizer,
        precision,
        device,
        module_rows(model, result),
        rss_peak_bytes=process.peak_bytes,
        process_step_bytes=max(0, process.peak_bytes - non_tensor_bytes),
        step_time_s=step_s,
        reserved_peak_bytes=process.reserved_peak_bytes,
        process_phase_peaks={
            k: max(0, v - non_tensor_bytes) for k, v in process.phase_peaks.items()
        },
    )


def _refuse_what_cannot_fit(workload, batch_size, optimizer, precision, device) -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from memfit.estimator.fake_build import build_fake_model
    from memfit.measure.headroom import available_bytes, check_headroom

    # Model states alone (weights, gradients, Adam's two moments: 16 bytes per fp32
    # parameter) tell cheaply whether the full estimate is worth running.
    try:
        with FakeTensorMode():
            model = build_fake_model(workload, device)
            states = 4 * sum(p.numel() * p.element_size() for p in model.parameters())
    except Exception:  # the estimate below (or the real step) will say what is wrong
        states = None
    if states is None or states > 0.25 * available_bytes(device):
        check_headroom(workload, batch_size, optimizer, precision, device)


def profile_from(
    result: TrackerResult,
    method: str,
    workload: Workload,
    batch_size: int,
    optimizer: str,
    precision: str,
    device: str,
    rows: list[ModuleRow],
    **measured,
) -> MemoryProfile:
    """A MemoryProfile from a tracked step; `measured` adds the process-side readings."""
    if measured.get("reserved_peak_bytes") is None:
        measured["reserved_peak_bytes"] = result.reserved_peak_bytes
    return MemoryProfile(
        method=method,
        device=device,
        batch_size=batch_size,
        peak_bytes=result.peak_bytes,
        categories=result.categories,
        peak_phase=result.peak_phase,
        phase_peaks=result.phase_peaks,
        modules=rows,
        workload=workload.name,
        optimizer=optimizer,
        precision=precision,
        config=dict(workload.config),
        timeline=result.timeline,
        phase_categories=result.phase_categories,
        **measured,
    )


def run_tracked_step(
    workload: Workload | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    batch,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    time_modules: bool = False,
    process: ProcessPeak | None = None,
    step: TrainingStep | None = None,
) -> tuple[TrackerResult, float]:
    """One training step under the tracker; shared by `profile`, `estimate` and plans.

    `step` is the step to run (a planned one); by default the workload's plain step.
    With `process`, the process's own high-water mark is read and reset at each phase change.
    """
    if step is None:
        settings = StepSettings(precision=precision, device=device)
        step = TrainingStep.for_workload(workload, model, optimizer, settings)
    tracker = MemoryTracker()
    tracker.model_cuda_allocator = str(device).startswith("cuda")
    tracker.register_model(model)
    if optimizer is not None:
        tracker.register_optimizer(optimizer)
    tracker.register(batch_tensors(batch), "other")

    def on_phase(phase: str) -> None:
        if process is not None:
            process.next_phase(phase)
        tracker.phase = phase

    previous = step.on_phase
    step.on_phase = on_phase
    start = time.perf_counter()
    try:
        with tracker.track(model, time_modules=time_modules):
            step(batch)
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
    finally:
        step.on_phase = previous
    return tracker.result(), time.perf_counter() - start


def module_rows(model: nn.Module, result: TrackerResult) -> list[ModuleRow]:
    """Per-module parameter bytes (each storage counted at its first owner) and saved activations."""
    seen: set[int] = set()
    keep: list = []  # keep storages alive so their ids stay unique while counting
    rows = []
    for name, module in model.named_modules():
        label = name or "(model)"
        own = 0
        tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        for tensor in tensors:
            for storage in iter_storages(tensor):
                if id(storage) not in seen:
                    seen.add(id(storage))
                    keep.append(storage)
                    own += storage.nbytes()
        acts = result.module_activations.get(label, 0)
        if own or acts:
            rows.append(
                ModuleRow(
                    label, type(module).__name__, own, acts, result.module_forward_s.get(label)
                )
            )
    return rows


def _check_precision(precision: str, device: str) -> None:
    if precision not in PRECISIONS:
        raise MeasureError(
            f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}"
        )
    if precision == "fp16" and not str(device).startswith("cuda"):
        raise MeasureError("fp16 training needs a CUDA device; on CPU use --precision bf16")
