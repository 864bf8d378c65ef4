"""The planner: the fastest combination of techniques whose predicted peak fits a budget.

Memory of a combination is predicted by running its step on fake tensors with the
techniques applied (checkpointing and precision for real, the last micro-batch with
gradients already present); optimizer-state techniques shift the whole step by a
constant, so they cost no extra run. Time comes from `memfit.timing`.

Order of preference, as a user would want it: exact techniques (micro-batching,
checkpointing) first; lossy ones (bf16, low-bit optimizer state) only when no exact
combination fits (and never with `exact=True`); offloading optimizer state to disk,
exact but slow, only when nothing else fits; then the honest answer: how much is
missing, how many machines sharding would need, which preset would hold it.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import torch
from torch import nn

from memfit.budget import Budget, format_bytes, smallest_preset_that_fits
from memfit.errors import PlanError
from memfit.estimator.fake import estimate
from memfit.estimator.verdict import runtime_reserve
from memfit.memory_profile import MemoryProfile
from memfit.techniques import checkpointing as ckpt
from memfit.techniques import lowbit
from memfit.techniques.accumulation import has_batch_statistics
from memfit.techniques.precision import measured_slowdown
from memfit.timing import StepTimeModel, build_time_model, probe_batches
from memfit.workload import Workload, load_workload

SAFETY_MARGIN = 0.05
"""Share of the usable budget kept free: allocator rounding, fragmentation, small buffers."""
MIN_BATCHNORM_MICRO = 8
"""Smallest micro-batch tried first for a model with BatchNorm: its statistics over fewer
samples are noisy enough to cost accuracy (micro-batches of 1 lost 8.7 points on digits)."""


@dataclass(kw_only=True)
class PlanSettings:
    """The setting of every technique in a plan."""

    batch_size: int
    micro_batch_size: int
    checkpointed: list[str] = field(default_factory=list)
    """Modules checkpointed one by one, or Sequential containers run as segments."""
    checkpoint_segments: int | None = None
    """When set, `checkpointed` names Sequential containers run in this many segments."""
    precision: str = "fp32"
    optimizer_state: str = "fp32"
    """`fp32` (the optimizer as it is), `8bit` or `4bit` Adam moments, or `offload` (on disk)."""
    offload_resident_bytes: int | None = None
    """With offload: the bound on the optimizer's resident memory during its step."""

    @property
    def accumulation_steps(self) -> int:
        return -(-self.batch_size // self.micro_batch_size)

    @property
    def exact(self) -> bool:
        return self.precision == "fp32" and self.optimizer_state in ("fp32", "offload")

    @property
    def lossy_count(self) -> int:
        return int(self.precision != "fp32") + int(self.optimizer_state in ("8bit", "4bit"))

    @property
    def techniques(self) -> list[str]:
        names = []
        if self.accumulation_steps > 1:
            names.append("micro-batching")
        if self.checkpointed:
            names.append("checkpointing")
        if self.precision != "fp32":
            names.append(f"{self.precision}-autocast")
        if self.optimizer_state in ("8bit", "4bit"):
            names.append(f"{self.optimizer_state}-optimizer-state")
        if self.optimizer_state == "offload":
            names.append("offload")
        return names

    def label(self) -> str:
        parts = [f"micro {self.micro_batch_size}x{self.accumulation_steps}"]
        if self.checkpoint_segments:
            parts.append(f"ckpt {self.checkpoint_segments} segments")
        elif self.checkpointed:
            parts.append(f"ckpt {len(self.checkpointed)}")
        if self.precision != "fp32":
            parts.append(self.precision)
        if self.optimizer_state != "fp32":
            parts.append(f"state {self.optimizer_state}")
        return ", ".join(parts)


@dataclass
class Candidate:
    """One combination the planner considered, with its predictions."""

    settings: PlanSettings
    predicted_peak_bytes: int
    predicted_step_s: float
    predicted_time_overhead: float
    fits: bool
    peak_phase: str = ""

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "label": s.label(),
            "micro_batch_size": s.micro_batch_size,
            "accumulation_steps": s.accumulation_steps,
            "checkpointed": list(s.checkpointed),
            "precision": s.precision,
            "optimizer_state": s.optimizer_state,
            "predicted_peak_bytes": int(self.predicted_peak_bytes),
            "predicted_time_overhead": round(self.predicted_time_overhead, 4),
            "fits": self.fits,
            "exact": s.exact,
        }


@dataclass
class Plan:
    """What makes a training step fit: the chosen settings, predictions, and what else was tried."""

    workload: str
    budget: Budget
    batch_size: int
    optimizer: str
    device: str
    nodes: int
    min_nodes: int | None
    """When one rank cannot fit: the fewest ranks whose sharded model states would."""
    usable_bytes: int
    reserve_bytes: int
    baseline: Candidate
    chosen: Candidate
    alternatives: list[Candidate]
    notes: list[str]
    time_source: str
    state_dir: str | None = None
    _workload: Workload | None = field(default=None, repr=False)

    # ---- the contract's names ------------------------------------------------------------------
    @property
    def fits(self) -> bool:
        return self.chosen.fits

    @property
    def settings(self) -> PlanSettings:
        return self.chosen.settings

    @property
    def baseline_peak_bytes(self) -> int:
        return self.baseline.predicted_peak_bytes

    @property
    def predicted_peak_bytes(self) -> int:
        return self.chosen.predicted_peak_bytes

    @property
    def predicted_time_overhead(self) -> float:
        return self.chosen.predicted_time_overhead

    @property
    def micro_batch_size(self) -> int:
        return self.settings.micro_batch_size

    @property
    def accumulation_steps(self) -> int:
        return self.settings.accumulation_steps

    @property
    def checkpointed(self) -> list[str]:
        return list(self.settings.checkpointed)

    @property
    def precision(self) -> str:
        return self.settings.precision

    @property
    def optimizer_state(self) -> str:
        return self.settings.optimizer_state

    @property
    def techniques(self) -> list[str]:
        return self.settings.techniques

    @property
    def shortfall_bytes(self) -> int:
        return max(0, self.predicted_peak_bytes - self.usable_bytes)

    def __getstate__(self) -> dict[str, Any]:
        # A plan travels (to other ranks, to disk) without its workload's functions, which
        # are often lambdas; `apply` then needs the loss function passed in.
        state = dict(self.__dict__)
        state["_workload"] = None
        return state

    def apply(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn=None):
        """Change `model` and `optimizer` as planned; returns a `step(batch)` for one update."""
        from memfit.train import PlannedStep

        if loss_fn is None:
            if self._workload is None:
                raise PlanError("pass loss_fn=...: this plan was not made from a Workload")
            loss_fn = self._workload.loss_fn
        return PlannedStep.build(self, model, optimizer, loss_fn)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "workload": self.workload,
            "budget_bytes": self.budget.bytes,
            "usable_bytes": self.usable_bytes,
            "reserve_bytes": self.reserve_bytes,
            "fits": self.fits,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "baseline_peak_bytes": int(self.baseline_peak_bytes),
            "predicted_peak_bytes": int(self.predicted_peak_bytes),
            "shortfall_bytes": int(self.shortfall_bytes),
            "micro_batch_size": s.micro_batch_size,
            "accumulation_steps": s.accumulation_steps,
            "checkpointed": list(s.checkpointed),
            "checkpoint_segments": s.checkpoint_segments,
            "precision": s.precision,
            "optimizer_state": s.optimizer_state,
            "predicted_time_overhead": round(self.predicted_time_overhead, 4),
            "techniques": s.techniques,
            "exact": s.exact,
            "offload_resident_bytes": s.offload_resident_bytes,
            "nodes": self.nodes,
            "min_nodes": self.min_nodes,
            "time_source": self.time_source,
            "notes": list(self.notes),
            "alternatives": [c.to_dict() for c in self.alternatives],
        }


# ---- the search ------------------------------------------------------------------------------


class _Search:
    """Fake-tensor runs for one (workload, batch, optimizer), cached by what changes memory."""

    def __init__(
        self,
        workload: Workload,
        batch: int,
        optimizer: str,
        device: str,
        usable: int,
        time_model: StepTimeModel,
        base_time_s: float,
        bandwidth=None,
        param_bytes: int = 0,
        params_meta=None,
    ):
        self.workload, self.batch, self.optimizer, self.device = workload, batch, optimizer, device
        self.usable = usable
        self.time_model = time_model
        self.base_time_s = base_time_s
        self.bandwidth = bandwidth
        self.param_bytes = param_bytes
        self.params_meta = params_meta or []
        self._runs: dict[tuple, MemoryProfile] = {}
        self.considered: list[Candidate] = []
        self.nodes = 1
        self.block_bytes = 0
        self._batch_bytes: dict[int, int] = {}
        self.min_micro = 1

    def run(
        self, micro: int, precision: str, checkpointed: tuple[str, ...], segments: int | None
    ) -> MemoryProfile:
        key = (micro, precision, checkpointed, segments)
        if key not in self._runs:

            def prepare(model: nn.Module) -> None:
                if segments:
                    for name in checkpointed:
                        ckpt.checkpoint_segments(model, name, segments)
                elif checkpointed:
                    ckpt.checkpoint_modules(model, list(checkpointed))

            self._runs[key] = estimate(
                self.workload,
                micro,
                self.optimizer,
                precision=precision,
                device=self.device,
                prepare=prepare if checkpointed else None,
                gradients_present=micro < self.batch,
            )
        return self._runs[key]

    def candidate(self, settings: PlanSettings) -> Candidate:
        prof = self.run(
            settings.micro_batch_size,
            settings.precision,
            tuple(settings.checkpointed),
            settings.checkpoint_segments,
        )
        # The caller holds the whole batch while its micro-batches run one by one.
        peak = (
            prof.peak_bytes
            + self.batch_bytes(self.batch)
            - self.batch_bytes(settings.micro_batch_size)
        )
        optimizer_bytes = prof.categories["optimizer"]
        extra_opt_s = 0.0
        if settings.optimizer_state in ("8bit", "4bit"):
            optimizer_bytes = lowbit.state_bytes(self.params_meta, settings.optimizer_state)
            peak += optimizer_bytes - prof.categories["optimizer"]
            extra_opt_s = (lowbit.LOW_BIT_STEP_SLOWDOWN - 1) * self.time_model.optimizer_s
        elif settings.optimizer_state == "offload":
            from memfit.techniques import offload

            # Give the optimizer what the rest of the step leaves, within offload's own default.
            room = self.usable - (peak - prof.categories["optimizer"])
            settings.offload_resident_bytes = int(
                min(offload.DEFAULT_MAX_RESIDENT_BYTES, max(4 * 2**20, 0.9 * room))
            )
            eff = offload.effect(
                self.param_bytes, "adamw", settings.offload_resident_bytes, bandwidth=self.bandwidth
            )
            peak += eff.optimizer_resident_bytes - prof.categories["optimizer"]
            optimizer_bytes = 0  # on disk: nothing left to shard
            extra_opt_s = eff.extra_seconds_per_step
        if self.nodes > 1:
            from memfit.estimator.sharded import sharding_saving

            peak -= sharding_saving(
                {**prof.categories, "optimizer": optimizer_bytes}, self.nodes, self.block_bytes
            )
        step_s = self.step_time(settings) + extra_opt_s
        overhead = step_s / self.base_time_s - 1 if self.time_model.source != "not needed" else 0.0
        cand = Candidate(settings, peak, step_s, overhead, peak <= self.usable, prof.peak_phase)
        if all(
            c.settings.label() != settings.label()
            or set(c.settings.checkpointed) != set(settings.checkpointed)
            for c in self.considered
        ):
            self.considered.append(cand)
        return cand

    def batch_bytes(self, size: int) -> int:
        if size not in self._batch_bytes:
            from torch._subclasses.fake_tensor import FakeTensorMode

            from memfit.measure.bytes import tensors_bytes
            from memfit.measure.step import batch_tensors

            with FakeTensorMode():
                batch = self.workload.make_batch(size, self.device)
                self._batch_bytes[size] = tensors_bytes(batch_tensors(batch))
        return self._batch_bytes[size]

    def step_time(self, s: PlanSettings) -> float:
        tm = self.time_model
        slow = measured_slowdown(s.precision, self.device) if s.precision != "fp32" else 1.0
        if s.checkpoint_segments:
            fraction = (s.checkpoint_segments - 1) / s.checkpoint_segments
            children = [
                u
                for u in tm.unit_forward_per_sample_s
                if any(u.startswith(c + ".") for c in s.checkpointed)
            ]
            recompute = tm.recompute_s(children, self.batch, fraction)
        else:
            recompute = tm.recompute_s(list(s.checkpointed), self.batch)
        compute = tm.forward_backward_s(self.batch, s.micro_batch_size) + recompute
        return compute * slow + tm.optimizer_s


def plan(
    workload: Workload | str,
    budget: Budget | str,
    batch_size: int | None = None,
    exact: bool = False,
    *,
    optimizer: str = "adam",
    device: str = "cpu",
    reserve_bytes: int | None = None,
    allow_offload: bool = True,
    state_dir: str | None = None,
    nodes: int = 1,
) -> Plan:
    """Find the fastest combination of techniques whose predicted peak fits `budget`.

    With `nodes` > 1 memory is per rank of a sharded (FSDP) run, `batch_size` is each
    rank's batch, and the plan is applied with `memfit.distributed.shard` on every rank.

        >>> from memfit import zoo
        >>> p = plan(zoo.get("mlp", depth=4, width=256, inputs=256), "12MB", batch_size=2048,
        ...          reserve_bytes=0)
        >>> p.fits and p.predicted_peak_bytes <= 12e6 < p.baseline_peak_bytes
        True
    """
    workload = load_workload(workload)
    budget = Budget.parse(budget)
    batch = batch_size or workload.default_batch_size
    reserve = runtime_reserve(budget) if reserve_bytes is None else reserve_bytes
    usable = int((budget.bytes - reserve) * (1 - SAFETY_MARGIN))
    if usable <= 0:
        raise PlanError(
            f"{budget} leaves nothing for training after the runtime's own "
            f"{format_bytes(reserve)}; give a larger budget"
        )
    base = estimate(workload, batch, optimizer, device=device)
    units, sequential, params_meta = _model_facts(workload)
    if base.peak_bytes <= usable:
        # Fits as it is: no technique, nothing to time.
        time_model = StepTimeModel(
            fixed_s=0.0, per_sample_s=0.0, optimizer_s=0.0, source="not needed"
        )
    else:
        # The probes are smaller than the batch, so the batch's peak bounds theirs; only a
        # batch too big to run here needs the probe itself estimated.
        probe_peak = base.peak_bytes
        if probe_peak >= 0.25 * psutil.virtual_memory().available:
            probe_peak = estimate(
                workload, probe_batches(batch)[-1], optimizer, device=device
            ).peak_bytes
        time_model = build_time_model(
            workload, units, device, optimizer, probe_peak, batch_size=batch
        )
    base_time = max(time_model.forward_backward_s(batch, batch) + time_model.optimizer_s, 1e-9)
    notes: list[str] = []
    if nodes < 1:
        raise PlanError("nodes must be at least 1")
    search = _Search(
        workload,
        batch,
        optimizer,
        device,
        usable,
        time_model,
        base_time,
        None,
        base.categories["parameters"],
        params_meta,
    )
    if nodes > 1:
        from memfit.estimator.sharded import largest_block_parameter_bytes

        search.nodes = nodes
        search.block_bytes = largest_block_parameter_bytes(base, units)
    baseline = search.candidate(PlanSettings(batch_size=batch, micro_batch_size=batch))

    batchnorm = has_batch_statistics(_build_fake(workload))
    floors = [min(MIN_BATCHNORM_MICRO, batch), 1] if batchnorm and batch > 1 else [1]
    chosen = baseline if baseline.fits else None
    for floor in floors:
        # With BatchNorm, tiny micro-batches come last: after every other technique.
        search.min_micro = floor
        if chosen is None:
            chosen = _best(search, _exact_candidates(search, units, sequential))
        if chosen is None and not exact:
            chosen = _best(search, _lossy_candidates(search, units, sequential, optimizer, device))
        if chosen is None and allow_offload and optimizer in ("adam", "adamw"):
            from memfit.techniques.offload import measure_disk_bandwidth

            state_dir = state_dir or tempfile.gettempdir()
            if search.bandwidth is None:
                search.bandwidth = measure_disk_bandwidth(state_dir, sample_bytes=32 * 2**20)
            chosen = _best(search, _offload_candidates(search, units, sequential))
    fits = chosen is not None
    if chosen is None:
        chosen = min(search.considered, key=lambda c: c.predicted_peak_bytes)
    notes += _notes(
        workload, base, chosen, fits, usable, budget, reserve, time_model, device, exact, search
    )
    return Plan(
        workload=workload.name,
        budget=budget,
        batch_size=batch,
        optimizer=optimizer,
        device=device,
        nodes=nodes,
        min_nodes=None if fits and nodes == 1 else _ranks_needed(base, usable),
        usable_bytes=usable,
        reserve_bytes=reserve,
        baseline=baseline,
        chosen=chosen,
        alternatives=[c for c in search.considered if c is not chosen],
        notes=notes,
        time_source=time_model.source,
        state_dir=state_dir,
        _workload=workload,
    )


def _model_facts(workload: Workload):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        model = workload.build_model()
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
        params_meta = [
            torch.empty(p.shape, dtype=p.dtype, device="meta").requires_grad_(p.requires_grad)
            for p in model.parameters()
        ]
    return units, sequential, params_meta


def _micro_sizes(batch: int) -> list[int]:
    """Candidate micro-batch sizes, largest first: the batch halved while it divides evenly,
    then every other divisor, so the effective batch is always split into equal parts."""
    divisors = [d for d in range(batch, 0, -1) if batch % d == 0]
    return (
        divisors
        if len(divisors) <= 16
        else sorted({d for d in divisors if d & (d - 1) == 0} | {batch}, reverse=True)
    )


def _largest_fitting_micro(search: _Search, make, above: int = 0) -> Candidate | None:
    """Binary search over micro-batch sizes for the largest that fits (peak falls with size).

    Only sizes over `above` are tried: a sibling option with fewer techniques already fits
    there, and the same or more micro-batches with more recompute could only be slower.
    """
    sizes = [m for m in _micro_sizes(search.batch) if m >= search.min_micro and m > above]
    lo, hi, best = 0, len(sizes) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        cand = search.candidate(make(sizes[mid]))
        if cand.fits:
            best, hi = cand, mid - 1
        else:
            lo = mid + 1
    return best


def _checkpoint_options(search: _Search, units: list[str], sequential: list[str], precision: str):
    """(checkpointed, segments) choices: none, the cheapest covering set, all units, sqrt segments."""
    yield (), None

    def selective(micro: int) -> tuple[tuple[str, ...], None]:
        return _select_for(search, units, micro, precision), None

    yield selective, None
    if units:
        yield tuple(units), None
    if sequential:
        length = max(2, round(math.sqrt(len(units))))
        yield tuple(sequential), length


def _select_for(search: _Search, units: list[str], micro: int, precision: str) -> tuple[str, ...]:
    """Budget-driven selection: the cheapest units whose savings cover what is missing."""
    prof = search.run(micro, precision, (), None)
    need = prof.peak_bytes - search.usable
    if need <= 0 or not units:
        return ()
    acts: dict[str, int] = {}
    for row in prof.modules:
        for unit in units:
            if row.name == unit or row.name.startswith(unit + "."):
                acts[unit] = acts.get(unit, 0) + row.activations
    per_unit_input = _unit_inputs(search, units, micro)
    times = search.time_model.unit_forward_per_sample_s
    candidates = [
        ckpt.Unit(u, acts.get(u, 0), per_unit_input.get(u, 0), times.get(u, 1e-6) * micro)
        for u in units
    ]
    chosen: list[str] = []
    for _ in range(4):  # savings are approximate: ask again with what is still missing
        chosen = ckpt.select_units(candidates, need)
        if not chosen:
            return ()
        prof_c = search.run(micro, precision, tuple(chosen), None)
        missing = prof_c.peak_bytes - search.usable
        if missing <= 0 or len(chosen) == len(units):
            break
        need += missing
    return tuple(chosen)


def _unit_inputs(search: _Search, units: list[str], micro: int) -> dict[str, int]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        model = search.workload.build_model()
        batch = search.workload.make_batch(micro, search.device)
        return ckpt.unit_input_bytes(model, units, lambda: search.workload.loss(model, batch))


def _group(search: _Search, units, sequential, precision: str = "fp32", state: str = "fp32"):
    """The best micro-batch size for each checkpointing option, at one precision and state."""
    above = 0
    for option, segments in _checkpoint_options(search, units, sequential, precision):

        def make(micro, option=option, segments=segments):
            names = option(micro)[0] if callable(option) else option
            return PlanSettings(
                batch_size=search.batch,
                micro_batch_size=micro,
                checkpointed=list(names),
                checkpoint_segments=segments,
                precision=precision,
                optimizer_state=state,
            )

        found = _largest_fitting_micro(search, make, above)
        if found is not None:
            above = found.settings.micro_batch_size
        yield found


def _exact_candidates(search: _Search, units, sequential):
    yield from _group(search, units, sequential)


def _lossy_candidates(search: _Search, units, sequential, optimizer: str, device: str):
    states = ["fp32"] + (["8bit", "4bit"] if optimizer in ("adam", "adamw") else [])
    precisions = ["fp32", "bf16"] + (["fp16"] if str(device).startswith("cuda") else [])
    for precision in precisions:
        for state in states:
            if precision != "fp32" or state != "fp32":
                yield from _group(search, units, sequential, precision, state)


def _offload_candidates(search: _Search, units, sequential):
    yield from _group(search, units, sequential, state="offload")


def _best(search: _Search, candidates) -> Candidate | None:
    fitting = [c for c in candidates if c is not None and c.fits]
    # Fewest lossy techniques first: a faster bf16 step is no reason to round numbers that
    # fit without it. Then the fastest; at equal times fewer micro-batches and recomputed
    # modules are simpler.
    return min(
        fitting,
        key=lambda c: (
            c.settings.lossy_count,
            round(c.predicted_step_s, 6),
            c.settings.accumulation_steps,
            len(c.settings.checkpointed),
        ),
        default=None,
    )


def _notes(
    workload,
    base: MemoryProfile,
    chosen: Candidate,
    fits: bool,
    usable: int,
    budget: Budget,
    reserve: int,
    time_model: StepTimeModel,
    device: str,
    exact: bool,
    search: _Search,
) -> list[str]:
    notes = [
        f"usable memory: {format_bytes(budget.bytes)} budget less "
        f"{format_bytes(reserve)} for the runtime, less a {int(SAFETY_MARGIN * 100)}% "
        f"margin = {format_bytes(usable)}"
    ]
    if budget.device == "gpu" and not str(device).startswith("cuda"):
        notes.append(
            "the budget is GPU memory but memory and time come from CPU kernels here; "
            "CUDA kernels save slightly different tensors and run at another speed: "
            "plan with --device cuda on the GPU machine for exact figures"
        )
    if base.peak_phase == "optimizer_step":
        notes.append(
            "the optimizer step sets the peak (model states dominate): checkpointing "
            "cannot lower it; compact optimizer state, offload or sharding can"
        )
    s = chosen.settings
    if s.accumulation_steps > 1 and has_batch_statistics(_build_fake(workload)):
        notes.append(
            f"the model has BatchNorm: micro-batches of {s.micro_batch_size} change "
            "its batch statistics, so training is not exactly the full-batch one"
        )
        if s.micro_batch_size < MIN_BATCHNORM_MICRO:
            notes.append(
                f"micro-batches under {MIN_BATCHNORM_MICRO} were needed: BatchNorm "
                "statistics over so few samples are noisy and can cost accuracy "
                "(consider GroupNorm, or a larger budget)"
            )
    if s.precision != "fp32":
        notes.append(
            f"{s.precision} autocast measured "
            f"{measured_slowdown(s.precision, device):.1f}x the fp32 time on this device"
        )
    if s.optimizer_state in ("8bit", "4bit"):
        notes.append(
            f"{s.optimizer_state} Adam moments are rounded (lossy; bitsandbytes and "
            "torchao report accuracy parity on the models they tested)"
        )
    if s.optimizer_state == "offload":
        notes.append("optimizer state lives in files on disk; each step reads and writes it once")
    if time_model.source != "not needed":
        notes.append(
            "time model: "
            + (
                "real passes timed on this device"
                if time_model.source == "measured"
                else "FLOPs counted on fake tensors (model too large to time here)"
            )
        )
    if not fits:
        need = chosen.predicted_peak_bytes + reserve
        preset = smallest_preset_that_fits(int(need / (1 - SAFETY_MARGIN)), budget.device)
        nodes = _ranks_needed(base, usable)
        text = (
            f"nothing fits: the smallest reachable peak is "
            f"{format_bytes(chosen.predicted_peak_bytes)}, "
            f"{format_bytes(chosen.predicted_peak_bytes - usable)} over"
        )
        if exact:
            text += "; allowing lossy techniques (drop --exact) may close the gap"
        if nodes:
            text += f"; sharded across {nodes} machines of this size it would fit"
        if preset:
            text += f"; a {preset.name} would hold it"
        notes.append(text)
    return notes


def _ranks_needed(base: MemoryProfile, usable: int) -> int | None:
    try:
        from memfit.distributed.memory import min_ranks
    except ImportError:
        return None
    c = base.categories
    other = c["activations"] + c["other"]
    try:
        return min_ranks(
            parameter_bytes=c["parameters"],
            gradient_bytes=c["parameters"],
            optimizer_bytes=c["optimizer"],
            budget_bytes=usable,
            unsharded_bytes=other,
        )
    except TypeError:
        return None


def _build_fake(workload: Workload) -> nn.Module:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return workload.build_model()


def settings_dict(settings: PlanSettings) -> dict[str, Any]:
    return asdict(settings)
