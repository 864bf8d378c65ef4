"""Plans as data: the chosen technique settings, their predictions, what else was tried."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memfit.budget import Budget, Room
from memfit.techniques.base import Prediction, TechniqueConfig
from memfit.techniques.registry import in_order, of

if TYPE_CHECKING:
    from torch import nn
    from torch.optim import Optimizer

    from memfit.workload import Workload

CONTRACT_DEFAULTS = {
    "micro_batch_size": None,
    "accumulation_steps": 1,
    "checkpointed": [],
    "checkpoint_segments": None,
    "precision": "fp32",
    "optimizer_state": "fp32",
    "offload_resident_bytes": None,
}


@dataclass(frozen=True)
class PlanSettings:
    """The chosen setting of each technique used, for one batch size."""

    batch_size: int
    configs: tuple[TechniqueConfig, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "configs", tuple(in_order(self.configs)))

    def get(self, technique: str) -> TechniqueConfig | None:
        return next((c for c in self.configs if c.technique == technique), None)

    def replace(self, *configs: TechniqueConfig, without: tuple[str, ...] = ()) -> PlanSettings:
        """These settings with `configs` set (same technique replaced) and `without` dropped."""
        names = {c.technique for c in configs} | set(without)
        kept = [c for c in self.configs if c.technique not in names]
        return PlanSettings(self.batch_size, tuple(kept) + configs)

    def fields(self) -> dict[str, Any]:
        """The plan JSON's per-technique keys (micro_batch_size, precision, ...)."""
        from memfit.techniques.registry import TECHNIQUES

        data = dict(CONTRACT_DEFAULTS, micro_batch_size=self.batch_size)
        present = {c.technique: c for c in self.configs}
        for tech in TECHNIQUES:
            if tech.name not in present:
                data.update(tech.contract_fields(None, self.batch_size))
        for config in self.configs:
            data.update(of(config).contract_fields(config, self.batch_size))
        return data

    # The contract's names, read off the configs.
    @property
    def micro_batch_size(self) -> int:
        return self.fields()["micro_batch_size"]

    @property
    def accumulation_steps(self) -> int:
        return self.fields()["accumulation_steps"]

    @property
    def checkpointed(self) -> list[str]:
        return self.fields()["checkpointed"]

    @property
    def checkpoint_segments(self) -> int | None:
        return self.fields()["checkpoint_segments"]

    @property
    def precision(self) -> str:
        return self.fields()["precision"]

    @property
    def optimizer_state(self) -> str:
        return self.fields()["optimizer_state"]

    @property
    def techniques(self) -> list[str]:
        return [of(c).plan_name(c) for c in self.configs]

    @property
    def exact(self) -> bool:
        return all(of(c).is_exact(c) for c in self.configs)

    @property
    def lossy_count(self) -> int:
        return sum(not of(c).is_exact(c) for c in self.configs)

    def label(self) -> str:
        parts = [f"micro {self.micro_batch_size}x{self.accumulation_steps}"]
        parts += [c.label() for c in self.configs if c.technique != "micro-batching"]
        return ", ".join(parts)


@dataclass(frozen=True)
class Candidate:
    """One combination the planner considered, with its predictions."""

    settings: PlanSettings
    prediction: Prediction
    fits: bool
    base_step_s: float
    """The plain step's predicted time, which `predicted_time_overhead` is relative to."""
    timed: bool = True

    @property
    def predicted_peak_bytes(self) -> int:
        return self.prediction.peak_bytes

    @property
    def predicted_process_peak_bytes(self) -> int:
        """With the kernels' own scratch memory (as the process or CUDA allocator sees it)."""
        return max(self.prediction.peak_bytes, self.prediction.process_peak_bytes)

    @property
    def peak_phase(self) -> str:
        return self.prediction.peak_phase

    @property
    def predicted_step_s(self) -> float:
        return self.prediction.time.step_s

    @property
    def predicted_time_overhead(self) -> float:
        if not self.timed or self.base_step_s <= 0:
            return 0.0
        return self.predicted_step_s / self.base_step_s - 1

    def to_dict(self) -> dict[str, Any]:
        fields = self.settings.fields()
        return {
            "label": self.settings.label(),
            "micro_batch_size": fields["micro_batch_size"],
            "accumulation_steps": fields["accumulation_steps"],
            "checkpointed": list(fields["checkpointed"]),
            "precision": fields["precision"],
            "optimizer_state": fields["optimizer_state"],
            "techniques": self.settings.techniques,
            "predicted_peak_bytes": int(self.predicted_peak_bytes),
            "predicted_process_peak_bytes": int(self.predicted_process_peak_bytes),
            "predicted_time_overhead": round(self.predicted_time_overhead, 4),
            "fits": self.fits,
            "exact": self.settings.exact,
        }


@dataclass(frozen=True)
class Plan:
    """What makes a training step fit: the chosen settings, predictions, and what else was tried."""

    workload: str
    budget: Budget
    room: Room
    batch_size: int
    optimizer: str
    device: str
    nodes: int
    min_nodes: int | None
    """When nothing fits: the fewest ranks whose sharded step would (None: none would)."""
    baseline: Candidate
    chosen: Candidate
    alternatives: tuple[Candidate, ...]
    notes: tuple[str, ...]
    time_source: str
    state_dir: str | None = None
    bytes_per_parameter: float | None = None
    """Model states (parameters, gradients, optimizer state) per trainable parameter at
    the chosen plan's peak."""
    _workload: Workload | None = field(default=None, repr=False, compare=False)

    # ---- the contract's names ----------------------------------------------------------------
    @property
    def fits(self) -> bool:
        return self.chosen.fits

    @property
    def settings(self) -> PlanSettings:
        return self.chosen.settings

    @property
    def usable_bytes(self) -> int:
        return self.room.usable_bytes

    @property
    def reserve_bytes(self) -> int:
        return self.room.reserve_bytes

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
        return max(0, self.chosen.predicted_process_peak_bytes - self.usable_bytes)

    def with_settings(self, settings: PlanSettings) -> Plan:
        """The same plan with other settings (predictions are not recomputed: for tests
        and for applying a hand-made variant)."""
        return dataclasses.replace(self, chosen=dataclasses.replace(self.chosen, settings=settings))

    def __getstate__(self) -> dict[str, Any]:
        # A plan travels (to other ranks, to disk) without its workload's functions, which
        # are often lambdas; `apply` then needs the loss function passed in.
        state = dict(self.__dict__)
        state["_workload"] = None
        return state

    def apply(self, model: nn.Module, optimizer: Optimizer, loss_fn=None):
        """Change `model` and `optimizer` as planned; returns a `step(batch)` for one update.

        The optimizer you pass keeps its parameter groups and hyper-parameters; when a
        technique needs another optimizer (low-bit or offloaded state) it shares those
        groups, so a scheduler built on yours keeps working.
        """
        from memfit.apply import apply_plan

        return apply_plan(self, model, optimizer, loss_fn)

    def _repr_html_(self) -> str:
        from memfit.report.notebook import plan_repr_html

        return plan_repr_html(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        fields = self.settings.fields()
        return {
            "workload": self.workload,
            "budget_bytes": self.budget.bytes,
            "usable_bytes": self.usable_bytes,
            "reserve_bytes": self.reserve_bytes,
            "fits": self.fits,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "device": self.device,
            "baseline_peak_bytes": int(self.baseline_peak_bytes),
            "predicted_peak_bytes": int(self.predicted_peak_bytes),
            "predicted_process_peak_bytes": int(self.chosen.predicted_process_peak_bytes),
            "predicted_reserved_bytes": (
                int(self.chosen.predicted_process_peak_bytes)
                if str(self.device).startswith("cuda")
                else None
            ),
            "shortfall_bytes": int(self.shortfall_bytes),
            "peak_phase": self.chosen.peak_phase,
            "predicted_categories": self.chosen.prediction.categories,
            **fields,
            "predicted_time_overhead": round(self.predicted_time_overhead, 4),
            "predicted_step_s": round(self.chosen.predicted_step_s, 6),
            "techniques": self.techniques,
            "settings": [c.to_dict() for c in self.settings.configs],
            "exact": self.settings.exact,
            "bytes_per_parameter": (
                round(self.bytes_per_parameter, 3) if self.bytes_per_parameter else None
            ),
            "nodes": self.nodes,
            "min_nodes": self.min_nodes,
            "time_source": self.time_source,
            "notes": list(self.notes),
            "alternatives": [c.to_dict() for c in self.alternatives],
        }
