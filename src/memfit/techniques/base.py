"""The technique protocol: every way of making a training step fit is one `Technique`.

A technique is one module in `memfit.techniques` holding, side by side:

- its **config**: a frozen dataclass (subclass of `TechniqueConfig`) that checks itself;
- its **candidates**: the settings worth trying for a workload and budget;
- its **effect**: how it changes a `Prediction` (bytes by category in each phase, the
  parts of the step time) and whether it is exact, lossy or slow;
- what it **supports** (devices, optimizers, node counts) and which other techniques it
  **conflicts** with, so the planner never offers what `apply` would refuse;
- its **apply**: what it does to a model, an optimizer and the step (`Training`).

Memory is predicted by running the planned step on fake tensors with every technique
whose `on_fake` is True applied by its own `apply` (or `fake_apply`), so prediction and
application share code; techniques that cannot run on fake tensors (compiled low-bit
optimizer steps, files on disk, other ranks) state their effect on the bytes instead.
The registry (`memfit.techniques.registry`) lists them; a new technique is one new file
and one line there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from memfit.measure.step import StepSettings

if TYPE_CHECKING:
    from memfit.planning.inputs import PlanContext

PHASES = ("forward", "backward", "optimizer_step", "zero_grad")
CATEGORIES = ("parameters", "gradients", "optimizer", "activations", "other")

ADAM_STEP_TEMPORARY_COPIES = 2
"""fp32 copies of the largest parameter alive at once in an Adam step that updates one
parameter at a time: torch's single-tensor Adam (the square root and the quotient of its
denominator) and torchao's compiled low-bit step both measured about two here."""

EXACT, LOSSY, SLOW, LEARNS = "exact", "lossy", "slow", "learns-differently"
"""Kinds of technique, in the order the planner prefers them (see `Technique.kind`)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TechniqueConfig:
    """One technique's setting in a plan. Subclasses add fields and check them."""

    technique: ClassVar[str] = ""

    def label(self) -> str:
        """A few words for tables: `micro 8x4`, `ckpt 6`, `bf16`."""
        return self.technique

    def to_dict(self) -> dict[str, Any]:
        data = {"technique": self.technique}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data


@dataclass(frozen=True, slots=True)
class TimeParts:
    """A step's time in parts each technique changes on its own, so order does not matter.

    step = (compute + recompute) * compute_factor + optimizer + extra
    """

    compute_s: float = 0.0
    """Forward and backward passes over the batch (every micro-batch)."""
    recompute_s: float = 0.0
    """Forwards run again in backward (checkpointing)."""
    compute_factor: float = 1.0
    """Slowdown of the passes (autocast on a CPU without 16-bit instructions: several x)."""
    optimizer_s: float = 0.0
    extra_s: float = 0.0
    """Added seconds: disk traffic of offloaded state, transfers to host memory."""

    @property
    def step_s(self) -> float:
        return (
            (self.compute_s + self.recompute_s) * self.compute_factor
            + self.optimizer_s
            + self.extra_s
        )


@dataclass(frozen=True)
class Prediction:
    """A step's predicted memory (bytes by category at each phase's peak) and time."""

    phases: Mapping[str, Mapping[str, int]]
    time: TimeParts = TimeParts()
    scratch: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Bytes kernels take outside tensors in each phase (measured: `planning.scratch`)."""
    reserved_extra: int = 0
    """CUDA: what the caching allocator reserves above the tensors' peak (its rounding and
    segments, `measure.cuda_allocator`); 0 on CPU."""

    @property
    def phase_peaks(self) -> dict[str, int]:
        return {phase: int(sum(cats.values())) for phase, cats in self.phases.items()}

    @property
    def process_peak_bytes(self) -> int:
        """The peak with kernels' own scratch memory and, on CUDA, the allocator's reserve
        above the tensors: what the process itself will hold (what runs out)."""
        return self.reserved_extra + max(
            (peak + self.scratch.get(phase, 0) for phase, peak in self.phase_peaks.items()),
            default=0,
        )

    @property
    def peak_phase(self) -> str:
        peaks = self.phase_peaks
        return max(peaks, key=lambda p: peaks[p]) if peaks else "forward"

    @property
    def peak_bytes(self) -> int:
        return max(self.phase_peaks.values(), default=0)

    @property
    def categories(self) -> dict[str, int]:
        """Bytes by category at the step's peak."""
        return dict(self.phases.get(self.peak_phase, dict.fromkeys(CATEGORIES, 0)))

    def map_phases(
        self, change: Callable[[str, dict[str, int]], dict[str, int] | None]
    ) -> Prediction:
        """A copy with each phase's categories passed through `change(phase, categories)`."""
        phases = {}
        for phase, cats in self.phases.items():
            new = dict(cats)
            phases[phase] = change(phase, new) or new
        return dataclasses.replace(self, phases=phases)

    def with_time(self, **changes: float) -> Prediction:
        return dataclasses.replace(self, time=dataclasses.replace(self.time, **changes))


@dataclass
class Training:
    """What `apply` changes: the model, the optimizer the step calls, and the step's settings.

    `optimizer` may be replaced (a low-bit or offloaded twin); `user_optimizer` stays the
    one the user passed, whose parameter groups the replacement shares, so learning-rate
    schedulers built on it keep working.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    settings: StepSettings
    batch_size: int
    """The batch each update receives."""
    user_optimizer: torch.optim.Optimizer | None = None
    fake: bool = False
    """Inside a fake-tensor prediction (nothing real is allocated)."""
    state_dir: str | None = None
    """Where techniques that keep state on disk may put it."""
    run_batch_size: int | None = None
    """Fake runs only: the size of the batch actually run (one micro-batch)."""
    gradients_present: bool = False
    """Fake runs only: start with every gradient allocated (a later micro-batch)."""
    applied: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.user_optimizer is None:
            self.user_optimizer = self.optimizer


class Technique:
    """Base class of the protocol; see the module docstring."""

    name: ClassVar[str]
    """The name in plans, tables and JSON (`micro-batching`, `checkpointing`...)."""
    config_type: ClassVar[type[TechniqueConfig]]
    kind: ClassVar[str] = EXACT
    """`exact` keeps the gradients of the plain step; `lossy` rounds numbers; `slow` is exact
    but costs far more time (disk); `learns-differently` changes what is trained (LoRA) and
    is only offered when the user allows it by name."""
    slot: ClassVar[str | None] = None
    """Techniques sharing a slot exclude each other (one way to hold optimizer state)."""
    order: ClassVar[int] = 50
    """Order of `apply` and of folding effects: lower first."""
    on_fake: ClassVar[bool] = True
    """Applied inside the fake-tensor run that predicts memory; False: `effect` does it."""
    changes_optimizer_step: ClassVar[bool] = False
    """Its fake-tensor prediction must run the optimizer step too (it changes what the step
    holds: 16-bit weights, adapters, an update inside backward); the others reuse the
    plain step's optimizer phase."""
    role: ClassVar[str] = "option"
    """`option`: the planner tries it on or off; `micro` and `checkpoint` are searched in
    their own loops; `given`: set by the request (sharding over the ranks asked for)."""

    # ---- what the planner asks -----------------------------------------------------------
    def supports(self, ctx: PlanContext) -> str | None:
        """None when the technique can run for this request, else the reason it cannot."""
        return None

    def candidates(self, ctx: PlanContext) -> Sequence[TechniqueConfig]:
        """The settings worth trying, most preferred first."""
        return ()

    def conflicts(
        self, config: TechniqueConfig, others: Mapping[str, TechniqueConfig], ctx: PlanContext
    ) -> str | None:
        """None when `config` combines with `others` (name -> config), else why not."""
        return None

    def effect(
        self, config: TechniqueConfig, prediction: Prediction, ctx: PlanContext
    ) -> Prediction:
        """The prediction with this technique's effect on bytes and time added."""
        return prediction

    def is_exact(self, config: TechniqueConfig) -> bool:
        return self.kind in (EXACT, SLOW)

    def notes(self, config: TechniqueConfig, ctx: PlanContext) -> list[str]:
        """What a user should know when the plan uses this setting."""
        return []

    def contract_fields(self, config: TechniqueConfig | None, batch_size: int) -> dict[str, Any]:
        """This technique's keys of the plan JSON (their values when it is off, for None)."""
        return {}

    def plan_name(self, config: TechniqueConfig) -> str:
        """The entry in a plan's `techniques` list."""
        return self.name

    # ---- what the plan does ----------------------------------------------------------------
    def apply(self, config: TechniqueConfig, training: Training) -> None:
        raise NotImplementedError

    def fake_apply(self, config: TechniqueConfig, training: Training) -> None:
        """How the technique joins a fake-tensor prediction (by default: its apply)."""
        self.apply(config, training)


def share_param_groups(
    source: torch.optim.Optimizer, build: Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
) -> torch.optim.Optimizer:
    """Build a replacement optimizer over the very group dicts of `source`.

    torch's `add_param_group` keeps the dict it is given, so both optimizers then read one
    learning rate per group: a scheduler stepping `source` steers the replacement.
    """
    return build(list(source.param_groups))


def iter_configs(configs: Iterable[TechniqueConfig]) -> dict[str, TechniqueConfig]:
    return {c.technique: c for c in configs}
