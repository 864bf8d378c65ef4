"""Everything the search needs, gathered in one visible place before it starts.

`gather` measures (the step-time model, 16-bit and low-bit slowdowns, the disk) and
reads facts off the model once (its checkpointable units, parameter sizes, BatchNorm,
batch bytes). The search itself (`memfit.planning.search`) is then a function of the
`PlanContext` and of fake-tensor runs, which are computed, not measured: the same
context gives the same plan.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from memfit.budget import Room
from memfit.estimator.fake import estimate
from memfit.estimator.fake_build import build_fake_model
from memfit.measure.bytes import tensors_bytes
from memfit.measure.step import batch_tensors
from memfit.memory_profile import MemoryProfile
from memfit.optim import build_optimizer
from memfit.planning.scratch import KernelScratch, measure_kernel_scratch
from memfit.techniques import checkpointing as ckpt
from memfit.techniques.accumulation import has_batch_statistics, micro_sizes
from memfit.techniques.activation_offload import measure_host_device_bandwidth, saved_tensor_bytes
from memfit.techniques.base import Prediction, TechniqueConfig
from memfit.techniques.blocks import find_blocks
from memfit.techniques.checkpointing import CheckpointConfig
from memfit.techniques.lowbit import optimizer_kind
from memfit.techniques.offload import DiskBandwidth
from memfit.timing import StepTimeModel, build_time_model, probe_batches
from memfit.workload import Workload


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for."""

    batch_size: int
    optimizer: str | None
    """An optimizer name, or None for the workload's own (`Workload.build_optimizer`)."""
    device: str
    room: Room
    exact: bool = False
    """Only exact techniques (no 16-bit autocast, no rounded optimizer state)."""
    allow: frozenset[str] = frozenset()
    """Techniques that change what is learned (LoRA), offered only when named here."""
    allow_offload: bool = True
    nodes: int = 1

    @property
    def on_cuda(self) -> bool:
        return str(self.device).startswith("cuda")


@dataclass(frozen=True)
class ModelFacts:
    """What the planner reads off the model once, on fake tensors."""

    units: tuple[str, ...]
    """Candidates for checkpointing: the repeated blocks, else the top-level children."""
    sequential: tuple[str, ...]
    """Sequential containers of four or more units, for segment checkpointing."""
    trainable_parameters: tuple[torch.Tensor, ...]
    """Meta tensors shaped as the trainable parameters (for state byte counts)."""
    parameter_bytes: int
    largest_parameter_bytes: int
    block_parameter_bytes: int
    """Parameters of the largest repeated block: what FSDP gathers at once."""
    has_batchnorm: bool
    optimizer_kind: str
    optimizer_groups: tuple[Mapping[str, Any], ...]
    """The optimizer's groups without their parameters (hyper-parameters only)."""
    batch_bytes_by_size: Mapping[int, int]
    unit_input_bytes_per_sample: Mapping[str, float] = field(default_factory=dict)
    clip_grad_norm: float | None = None
    """The workload clips the gradients' total norm to this before each step."""
    saved_bytes_per_sample: float = 0.0
    """CUDA: bytes of the non-parameter tensors autograd saves in forward, per sample."""
    saved_parameter_bytes: int = 0
    """CUDA: bytes of parameters autograd saves in one forward (weights kept by layers)."""
    lora_targets: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """The linear layers LoRA would adapt (every one but the head): (in, out) by name."""

    def batch_bytes(self, size: int) -> int:
        return self.batch_bytes_by_size[size]


@dataclass(frozen=True)
class Measurements:
    """Measured on the device in use, before the search."""

    time_model: StepTimeModel
    precision_slowdown: Mapping[str, float] = field(default_factory=dict)
    low_bit_slowdown: Mapping[int, float] = field(default_factory=dict)
    low_bit_step_copies: Mapping[int, float] = field(default_factory=dict)
    """fp32 copies of the largest parameter each low-bit step holds at once."""
    disk_bandwidth: DiskBandwidth | None = None
    lora_base_slowdown: Mapping[str, float] = field(default_factory=dict)
    """A frozen layer's time under each LoRA base storage over a trained fp32 layer's."""
    kernel_scratch: KernelScratch | None = None
    """Memory kernels take outside tensors, by phase and micro-batch (None: not measured)."""
    host_device_bandwidth: float | None = None
    """CUDA: bytes per second of a pinned copy between host and device (None: not measured)."""


@dataclass(frozen=True)
class PlanContext:
    """The search's whole input (with the fake-tensor runs it asks for)."""

    workload_name: str
    request: PlanRequest
    facts: ModelFacts
    measurements: Measurements
    baseline: MemoryProfile
    """The plain step, estimated on fake tensors."""


def read_facts(workload: Workload, request: PlanRequest) -> ModelFacts:
    """Facts of the model and its batches, read on fake tensors (nothing is allocated)."""
    with FakeTensorMode():
        model = build_fake_model(workload, request.device)
        units = ckpt.candidate_units(model)
        modules = dict(model.named_modules())
        sequential = [
            name
            for name, m in modules.items()
            if isinstance(m, nn.Sequential)
            and name
            and len(m) >= 4
            and any(u.startswith(name + ".") for u in units)
        ]
        trainable = [p for p in model.parameters() if p.requires_grad]
        meta = tuple(
            torch.empty(p.shape, dtype=p.dtype, device="meta").requires_grad_(True)
            for p in trainable
        )
        opt = build_optimizer(workload, request.optimizer, model)
        groups = tuple({k: v for k, v in g.items() if k != "params"} for g in opt.param_groups)
        kind = optimizer_kind(opt)
        blocks = find_blocks(model)
        block_bytes = max(
            (sum(p.numel() * p.element_size() for p in b.parameters()) for _, b in blocks),
            default=0,
        )
        batch_bytes = {
            size: tensors_bytes(batch_tensors(workload.make_batch(size, request.device)))
            for size in {request.batch_size, *micro_sizes(request.batch_size)}
        }
        # What a checkpointed unit keeps (its inputs) grows with the batch: read it per sample.
        probe = min(request.batch_size, 4)
        sample = workload.make_batch(probe, request.device)
        kept = ckpt.unit_input_bytes(model, units, lambda: workload.loss(model, sample))
        saved = None
        if request.on_cuda:
            # What activation offload would move across the bus.
            saved = saved_tensor_bytes(model, lambda: workload.loss(model, sample))
        lora_targets = _lora_targets(model)
    return ModelFacts(
        units=tuple(units),
        sequential=tuple(sequential),
        trainable_parameters=meta,
        parameter_bytes=sum(p.numel() * p.element_size() for p in meta),
        largest_parameter_bytes=max((p.numel() * p.element_size() for p in meta), default=0),
        block_parameter_bytes=block_bytes,
        has_batchnorm=has_batch_statistics(model),
        optimizer_kind=kind,
        optimizer_groups=groups,
        batch_bytes_by_size=batch_bytes,
        unit_input_bytes_per_sample={u: b / probe for u, b in kept.items()},
        clip_grad_norm=workload.clip_grad_norm,
        saved_bytes_per_sample=(saved.packed_bytes - saved.parameter_bytes) / probe
        if saved
        else 0.0,
        saved_parameter_bytes=saved.parameter_bytes if saved else 0,
        lora_targets=lora_targets,
    )


def _lora_targets(model: nn.Module) -> dict[str, tuple[int, int]]:
    from memfit.techniques._lora_layers import default_targets, linear_shape

    modules = dict(model.named_modules())
    return {name: linear_shape(modules[name]) for name in default_targets(model)}


def gather(
    workload: Workload,
    request: PlanRequest,
    *,
    time_model: StepTimeModel | None = None,
    calibrate: bool | None = None,
) -> PlanContext:
    """Estimate the plain step, read the model's facts, and time the step when it must change.

    `calibrate` measures the kernels' own scratch memory on real passes (default: when
    the step was timed on real passes, that is when it must change and runs here).

    Measurements only lossy or slow techniques need come later, from `measure_more`,
    when the exact ones were not enough.
    """
    from memfit import progress

    with progress.task("planning: measuring", total=3) as bar:
        baseline = estimate(workload, request.batch_size, request.optimizer, device=request.device)
        bar.advance()
        facts = read_facts(workload, request)
        bar.advance()
        if time_model is None:
            needs_help = not request.room.fits(baseline.peak_bytes)
            time_model = _time_model(workload, facts, request, baseline, needs_help)
        scratch = None
        if calibrate is None:
            calibrate = time_model.source == "measured"
        if calibrate and baseline.peak_bytes < 0.25 * psutil.virtual_memory().available:
            # The model runs here: its kernels' own memory can be measured too.
            units = CheckpointConfig(modules=facts.units) if facts.units else None
            sizes = probe_batches(request.batch_size)[-2:]
            scratch = measure_kernel_scratch(workload, request.device, sizes, units)
        bandwidth = None
        if request.on_cuda and time_model.source != "not needed":
            bandwidth = measure_host_device_bandwidth(request.device)
        bar.advance()
    return PlanContext(
        workload_name=workload.name,
        request=request,
        facts=facts,
        measurements=Measurements(
            time_model=time_model, kernel_scratch=scratch, host_device_bandwidth=bandwidth
        ),
        baseline=baseline,
    )


MEASURED_STAGES = ("lossy", "slow")
"""What `measure_more` adds, in the order the planner needs it."""


def measure_more(ctx: PlanContext, stage: str, *, state_dir: str | None = None) -> PlanContext:
    """`ctx` with the measurements techniques of kind `stage` need (`lossy`: 16-bit and
    low-bit slowdowns; `slow`: the disk's bandwidth)."""
    from memfit.techniques.lowbit import unsupported_reason
    from memfit.techniques.precision import measured_slowdown
    from memfit.timing import low_bit_step_copies, low_bit_step_slowdown

    req, facts, m = ctx.request, ctx.facts, ctx.measurements
    changes: dict[str, Any] = {}
    if stage == "lossy" and not req.exact:
        slowdowns = {"bf16": measured_slowdown("bf16", req.device)}
        if req.on_cuda:
            slowdowns["fp16"] = measured_slowdown("fp16", req.device)
        changes["precision_slowdown"] = slowdowns
        if unsupported_reason(facts.optimizer_kind, facts.optimizer_groups) is None:
            changes["low_bit_slowdown"] = {
                bits: low_bit_step_slowdown(bits, req.device) for bits in (8, 4)
            }
            largest = max(facts.trainable_parameters, key=lambda p: p.numel(), default=None)
            shape = tuple(largest.shape) if largest is not None else (1024, 1024)
            changes["low_bit_step_copies"] = {
                bits: low_bit_step_copies(bits, req.device, shape) for bits in (8, 4)
            }
    if stage == "lossy" and not req.exact and "lora" in req.allow:
        from memfit.techniques._lora_layers import measured_base_slowdown, offered_bases

        changes["lora_base_slowdown"] = {
            base: measured_base_slowdown(base, req.device) for base in offered_bases(req.device)
        }
    if stage == "slow" and req.allow_offload and facts.optimizer_kind in ("adam", "adamw"):
        from memfit.techniques.offload import measure_disk_bandwidth

        changes["disk_bandwidth"] = measure_disk_bandwidth(
            state_dir or tempfile.gettempdir(), sample_bytes=32 * 2**20
        )
    if not changes:
        return ctx
    return dataclasses.replace(ctx, measurements=dataclasses.replace(m, **changes))


def _time_model(workload, facts, request, baseline, needs_help: bool) -> StepTimeModel:
    if not needs_help:
        # Fits as it is: no technique, nothing to time.
        return StepTimeModel(fixed_s=0.0, per_sample_s=0.0, optimizer_s=0.0, source="not needed")
    # The probes are smaller than the batch, so the batch's peak bounds theirs; only a
    # batch too big to run here needs the probe itself estimated.
    probe_peak = baseline.peak_bytes
    if probe_peak >= 0.25 * psutil.virtual_memory().available:
        probe = probe_batches(request.batch_size)[-1]
        probe_peak = estimate(workload, probe, request.optimizer, device=request.device).peak_bytes
    return build_time_model(
        workload,
        list(facts.units),
        request.device,
        request.optimizer,
        probe_peak,
        batch_size=request.batch_size,
    )


class FakeRuns:
    """Fake-tensor runs of the step with some techniques applied, each run once.

    Keyed by the configs that run on fake tensors (the others change bytes by formula),
    so candidates that differ only in optimizer state or sharding share a run. The
    optimizer step is the same whatever the micro-batches, checkpointing or autocast
    (its phase holds model states, gradients and the batch), so it runs once, in the
    plain step, and candidates run forward and backward only, unless one of their
    techniques changes the step itself (`Technique.changes_optimizer_step`).
    """

    def __init__(self, workload: Workload, request: PlanRequest):
        self.workload = workload
        self.request = request
        self._runs: dict[tuple[TechniqueConfig, ...], MemoryProfile] = {}
        self._batch_bytes: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def profile(self, configs: tuple[TechniqueConfig, ...]) -> MemoryProfile:
        if configs not in self._runs:
            self._runs[configs] = estimate(
                self.workload,
                self.request.batch_size,
                self.request.optimizer,
                device=self.request.device,
                techniques=configs,
                # On CUDA the whole step runs: the allocator's reserve depends on its order.
                optimizer_step=not configs or _changes_step(configs) or self.request.on_cuda,
            )
        return self._runs[configs]

    def prediction(self, configs: tuple[TechniqueConfig, ...]) -> Prediction:
        prof = self.profile(configs)
        phases = {k: dict(v) for k, v in (prof.phase_categories or {}).items()}
        if configs and not _changes_step(configs) and not self.request.on_cuda:
            # The plain step's optimizer phases, with this run's (micro-)batch held in them;
            # micro-batching's effect adds the rest of the batch back.
            plain = self.profile(())
            run_batch = (
                prof.batch_size
                if prof.config.get("run_batch_size") is None
                else (prof.config["run_batch_size"])
            )
            fewer = self.batch_bytes(self.request.batch_size) - self.batch_bytes(run_batch)
            for phase in ("optimizer_step", "zero_grad"):
                if phase in plain.phase_categories:
                    cats = dict(plain.phase_categories[phase])
                    cats["other"] = max(0, cats["other"] - fewer)
                    phases[phase] = cats
        if not phases:
            phases = {prof.peak_phase: dict(prof.categories)}
        extra = 0
        if prof.reserved_peak_bytes is not None:
            extra = max(0, prof.reserved_peak_bytes - prof.peak_bytes)
        return Prediction(phases=phases, reserved_extra=extra)

    def batch_bytes(self, size: int) -> int:
        if size not in self._batch_bytes:
            self._batch_bytes[size] = fake_batch_bytes(self.workload, size, self.request.device)
        return self._batch_bytes[size]


def _changes_step(configs) -> bool:
    from memfit.techniques.registry import of

    return any(of(c).changes_optimizer_step for c in configs)


def fake_batch_bytes(workload: Workload, size: int, device: str) -> int:
    """Bytes of one batch of `size`, made on fake tensors."""
    with FakeTensorMode():
        return tensors_bytes(batch_tensors(workload.make_batch(size, device)))
