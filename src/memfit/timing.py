"""How long a training step takes, and how techniques change it, from measurements here.

The planner needs time costs without trial runs of every plan. The model:

    step(plan) = A * fixed + compute(batch) * precision_slowdown + recompute + optimizer_step

- `fixed` and the per-sample `compute` slope come from timing real forward+backward
  passes at two small batch sizes (a few tenths of a second); per-unit forward
  times come from hooks in the same runs. A model too big to run here falls back
  to FLOPs counted on fake tensors divided by a measured matmul throughput.
- `A` is the number of micro-batches, `recompute` the checkpointed units' forward time,
- `precision_slowdown` is timed on this device (`techniques.precision.measured_slowdown`),
- the optimizer step is timed on a slice of parameters and scaled.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import psutil
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from memfit.cache import cached_measurement
from memfit.measure.step import StepSettings, TrainingStep
from memfit.optim import build_optimizer
from memfit.workload import Workload

PROBE_BATCHES = (2, 16)
"""Probe sizes for a model timed without a target batch size."""


def probe_batches(batch_size: int | None) -> tuple[int, ...]:
    """Sizes far enough apart that the slope is not lost in timing noise, all cheap.

    The last two fit the line; a batch of 1 is timed too when it lies well below them,
    because tiny micro-batches cost more per sample than the line says.
    """
    if not batch_size or batch_size < 8:
        return PROBE_BATCHES if not batch_size else (1, max(2, batch_size))
    low, high = max(1, batch_size // 8), max(2, batch_size // 2)
    return (1, low, high) if low >= 3 else (low, high)


@dataclass
class StepTimeModel:
    """Seconds for parts of a step, from which any plan's step time is predicted."""

    fixed_s: float
    """Per forward+backward pass, whatever the batch (interpreter, kernel launches)."""
    per_sample_s: float
    """Forward+backward time per sample."""
    optimizer_s: float
    """One optimizer step with fp32 Adam state."""
    unit_forward_per_sample_s: dict[str, float] = field(default_factory=dict)
    """Forward time per sample of each candidate unit for checkpointing."""
    source: str = "measured"
    """`measured` (real passes timed here) or `flops` (counted on fake tensors)."""
    small_probe: tuple[int, float] | None = None
    """(size, seconds) of a pass timed below the fitted line, for tiny micro-batches."""
    line_from: int = 1
    """The smallest size the line was fitted at."""

    def pass_s(self, micro: int) -> float:
        """One forward+backward pass over `micro` samples."""
        on_line = self.fixed_s + self.per_sample_s * micro
        if self.small_probe is None or micro >= self.line_from:
            return on_line
        size, seconds = self.small_probe
        # Between the small probe and the line's first point, interpolate.
        at_line = self.fixed_s + self.per_sample_s * self.line_from
        share = (micro - size) / max(self.line_from - size, 1)
        return seconds + share * (at_line - seconds)

    def forward_backward_s(self, batch: int, micro: int) -> float:
        steps = -(-batch // micro)
        return steps * self.pass_s(micro) if micro < batch else self.pass_s(batch)

    def recompute_s(self, units: list[str], batch: int, segment_fraction: float = 1.0) -> float:
        return (
            batch
            * segment_fraction
            * sum(self.unit_forward_per_sample_s.get(u, 0.0) for u in units)
        )


def build_time_model(
    workload: Workload,
    units: list[str],
    device: str = "cpu",
    optimizer: str | None = None,
    peak_bytes_at_probe: int | None = None,
    batch_size: int | None = None,
) -> StepTimeModel:
    """Time real passes when the model fits easily here; otherwise count FLOPs.

    `peak_bytes_at_probe` is the estimated peak at the larger probe size.
    """
    available = psutil.virtual_memory().available
    runnable = peak_bytes_at_probe is not None and peak_bytes_at_probe < 0.25 * available
    probes = probe_batches(batch_size)
    if runnable:
        return _measured_model(workload, units, device, optimizer, probes)
    return _flop_model(workload, units, device)


def _measured_model(
    workload: Workload,
    units: list[str],
    device: str,
    optimizer: str | None,
    probes: tuple[int, ...] = PROBE_BATCHES,
) -> StepTimeModel:
    torch.manual_seed(0)
    with torch.device(device):
        model = workload.build_model()
    model.train()
    opt = build_optimizer(workload, optimizer, model)
    modules = dict(model.named_modules())
    unit_time: dict[str, float] = {}
    starts: dict[str, float] = {}
    handles = []
    for name in units:

        def pre(_m, _a, _n=name):
            starts[_n] = time.perf_counter()

        def post(_m, _a, _o, _n=name):
            unit_time[_n] = unit_time.get(_n, 0.0) + time.perf_counter() - starts.pop(_n, 0.0)

        handles += [
            modules[name].register_forward_pre_hook(pre),
            modules[name].register_forward_hook(post),
        ]
    times: dict[int, tuple[float, dict[str, float]]] = {}
    opt_s = float("inf")
    marks: dict[str, float] = {}

    def mark(phase: str) -> None:
        _sync(device)
        marks.setdefault(phase, time.perf_counter())

    step = TrainingStep.for_workload(
        workload, model, opt, StepSettings(device=device), on_phase=mark
    )
    try:
        step(workload.make_batch(probes[0], device))
        # Best of two, the probes taken in turn: other processes only ever make a pass
        # slower, and a burst of load then slows one reading of each size, not all of one.
        for _ in range(2):
            for b in probes:
                batch = workload.make_batch(b, device)
                unit_time.clear()
                marks.clear()
                step(batch)
                mark("done")
                elapsed = marks["optimizer_step"] - marks["forward"]
                if elapsed < times.get(b, (float("inf"),))[0]:
                    times[b] = (elapsed, dict(unit_time))
                opt_s = min(opt_s, marks["zero_grad"] - marks["optimizer_step"])
    finally:
        for h in handles:
            h.remove()
    ordered = sorted(times.items())
    (b1, (t1, _)), (b2, (t2, units2)) = ordered[-2:]
    small = (ordered[0][0], ordered[0][1][0]) if len(ordered) == 3 else None
    slope = (t2 - t1) / (b2 - b1)
    if slope <= 0:  # timing noise swamped the difference: treat time as proportional
        slope, fixed = t2 / b2, 0.0
    else:
        fixed = max(t1 - slope * b1, 0.0)
    return StepTimeModel(
        fixed_s=fixed,
        per_sample_s=slope,
        optimizer_s=opt_s,
        unit_forward_per_sample_s={u: t / b2 for u, t in units2.items()},
        source="measured",
        small_probe=small,
        line_from=b1,
    )


def _flop_model(workload: Workload, units: list[str], device: str) -> StepTimeModel:
    batch = PROBE_BATCHES[-1]
    from memfit.estimator.fake_build import build_fake_model

    with FakeTensorMode():
        torch.manual_seed(0)
        model = build_fake_model(workload, device)
        root = type(model).__name__
        params = sum(p.numel() for p in model.parameters())
        with FlopCounterMode(display=False) as counter:
            # Forward and backward only: the optimizer's cost is modelled below.
            TrainingStep.for_workload(workload, model, None)(workload.make_batch(batch, device))
    counts = counter.get_flop_counts()
    throughput = matmul_flops_per_s(device)
    total = counter.get_total_flops()
    unit_s = {}
    for name in units:
        flops = sum(counts.get(f"{root}.{name}", {}).values())
        unit_s[name] = flops / 3 / throughput / batch  # forward is about a third of fwd+bwd
    # Adam touches ~16 bytes per parameter several times; memory bandwidth bound.
    optimizer_s = params * adam_seconds_per_parameter(device)
    return StepTimeModel(
        fixed_s=0.0,
        per_sample_s=total / throughput / batch,
        optimizer_s=optimizer_s,
        unit_forward_per_sample_s=unit_s,
        source="flops",
    )


@functools.lru_cache(maxsize=4)
def matmul_flops_per_s(device: str = "cpu", size: int = 512) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    _sync(device)
    return 10 * 2 * size**3 / (time.perf_counter() - start)


@functools.lru_cache(maxsize=4)
def adam_seconds_per_parameter(device: str = "cpu", numel: int = 1 << 20) -> float:
    param = torch.nn.Parameter(torch.randn(numel, device=device))
    opt = torch.optim.Adam([param])
    param.grad = torch.randn_like(param)
    opt.step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(3):
        opt.step()
    _sync(device)
    return (time.perf_counter() - start) / 3 / numel


LOW_BIT_PROBE_SHAPE = (4, 1024, 1024)
"""Parameters the low-bit step is timed on: 4 tensors of 1M values (one compiled shape)."""


def low_bit_step_slowdown(bits: int, device: str = "cpu") -> float:
    """Time of torchao's `bits`-bit AdamW step over torch's AdamW step, on this device.

    torchao compiles its step, which takes tens of seconds the first time on a CPU, so
    the ratio is kept in memfit's cache (per device, torch and torchao version) and
    timed again only when one of them changes.
    """
    key = _low_bit_key(bits, device)
    if key is None:
        return 1.0
    return cached_measurement(f"{key}/slowdown", lambda: _time_low_bit_step(bits, device))


def low_bit_step_copies(
    bits: int, device: str = "cpu", shape: tuple[int, ...] = (1024, 1024)
) -> float:
    """fp32 copies of a parameter of `shape` that torchao's `bits`-bit step holds at once.

    Its update dequantizes one parameter's moments at a time; how many temporaries that
    takes depends on the layout, on the kernels the compiler picks for the shape and on
    torchao's version (here 2 to 4 for 8-bit, about 7 for 4-bit), so it is read off the
    process's own peak for the shape asked (capped at 4M values), and cached.
    """
    numel = math.prod(shape)
    if numel > MAX_PROBE_NUMEL or numel < 4096:
        shape = (2048, 2048) if numel > MAX_PROBE_NUMEL else (64, 64)
    key = _low_bit_key(bits, device)
    if key is None:
        return 2.0
    shape_key = "x".join(map(str, shape))
    return cached_measurement(
        f"{key}/copies/{shape_key}", lambda: _low_bit_step_copies(bits, device, shape)
    )


MAX_PROBE_NUMEL = 4 * 2**20


def _low_bit_key(bits: int, device: str) -> str | None:
    import importlib.metadata

    from memfit.cache import device_name

    try:
        ao_version = importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        return None
    return f"low-bit-step/{bits}/{device_name(device)}/torch-{torch.__version__}/ao-{ao_version}"


def _probe_params(shapes, device: str) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*shape, device=device)) for shape in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def _time_low_bit_step(bits: int, device: str) -> float:
    from memfit.techniques.lowbit import low_bit_twin

    count, rows, cols = LOW_BIT_PROBE_SHAPE
    plain = torch.optim.AdamW(_probe_params([(rows, cols)] * count, device))
    low = low_bit_twin(
        torch.optim.AdamW(_probe_params([(rows, cols)] * count, device)), bits, device
    )
    for opt in (plain, low):
        for _ in range(2):  # warm-up: state creation, kernel selection, compilation
            opt.step()
    best = {id(plain): float("inf"), id(low): float("inf")}
    # Taken in turn, best of five: a burst of load slows one reading of each, not all of one.
    for _ in range(5):
        for opt in (plain, low):
            _sync(device)
            start = time.perf_counter()
            opt.step()
            _sync(device)
            best[id(opt)] = min(best[id(opt)], time.perf_counter() - start)
    return max(best[id(low)] / max(best[id(plain)], 1e-9), 0.1)


def _low_bit_step_copies(bits: int, device: str, shape: tuple[int, ...]) -> float:
    from memfit.measure.process import ProcessPeak, relax_allocator, stabilize_allocator
    from memfit.techniques.lowbit import low_bit_twin

    (param,) = _probe_params([shape], device)
    opt = low_bit_twin(torch.optim.AdamW([param]), bits, device)
    for _ in range(2):
        opt.step()
    stable = stabilize_allocator()
    readings = []
    try:
        for _ in range(3):
            process = ProcessPeak(str(device))
            process.start()
            opt.step()
            readings.append(process.stop() - process.baseline_bytes)
    finally:
        if stable:
            relax_allocator()
    return max(sorted(readings)[1] / (param.numel() * 4), 0.0)


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
