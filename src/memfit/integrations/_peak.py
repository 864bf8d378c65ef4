"""The measured peak of a trainer's first steps against a budget (shared by both callbacks).

On CPU the peak is the process's resident memory (its RSS high-water mark, as the
OS reports it): the interpreter, libraries, model, optimizer state, activations,
everything a budget such as a Colab's 12 GB must hold. On CUDA it is what the
caching allocator reserved at its highest (what runs out on a GPU), against the
budget less the runtime reserve that lives outside the allocator (the CUDA context).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from memfit.budget import Budget, format_bytes
from memfit.errors import OutOfBudgetError, PlanError
from memfit.measure.process import ProcessPeak

logger = logging.getLogger("memfit")

ACTIONS = ("warn", "stop", "raise")


def plan_fields(plan: Any) -> dict[str, Any]:
    """A plan's JSON dictionary (`Plan.to_dict()`), from a Plan or that dictionary itself."""
    data = dict(plan.to_dict()) if hasattr(plan, "to_dict") else plan
    budget = getattr(plan, "budget", None)
    if isinstance(data, dict) and getattr(budget, "device", None):
        # What the budget is memory of (cpu RAM or a gpu), which the JSON does not say.
        data.setdefault("budget_device", budget.device)
    if not isinstance(data, dict) or "micro_batch_size" not in data:
        raise PlanError(
            "expected a memfit plan (memfit.plan(...), or the dictionary of "
            "`memfit plan ... --json`)"
        )
    return data


@dataclass
class PeakWatch:
    """Watches the first `steps` optimizer steps; says when their peak is over the budget."""

    budget_bytes: int
    reserve_bytes: int = 0
    steps: int = 3
    on_over_budget: str = "warn"
    measured_peak_bytes: int | None = None
    """The highest reading so far (None before the first step ended)."""
    steps_seen: int = 0
    over_budget: bool = False
    device: str = "cpu"
    _peak: ProcessPeak | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.on_over_budget not in ACTIONS:
            raise PlanError(f"on_over_budget must be one of {', '.join(ACTIONS)}")
        if self.steps < 1:
            raise PlanError("steps must be at least 1")

    @classmethod
    def from_settings(
        cls, plan: Any = None, budget: Budget | str | int | None = None, **kwargs
    ) -> PeakWatch:
        if plan is not None:
            data = plan_fields(plan)
            return cls(int(data["budget_bytes"]), int(data.get("reserve_bytes") or 0), **kwargs)
        if budget is None:
            raise PlanError("give the plan, or a budget (such as '12GB' or 'colab')")
        size = budget if isinstance(budget, int) else Budget.parse(budget).bytes
        return cls(int(size), **kwargs)

    @property
    def limit_bytes(self) -> int:
        """What the reading is compared with: the whole budget for RSS, less the reserve on CUDA."""
        return self.budget_bytes - (self.reserve_bytes if self._cuda else 0)

    @property
    def _cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    @property
    def watching(self) -> bool:
        return self._peak is not None

    def begin(self, device: torch.device | str) -> None:
        self.device = str(device)
        self._peak = ProcessPeak(self.device)
        self._peak.start()

    def _reading(self) -> int:
        if self._cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_reserved()
        assert self._peak is not None
        return self._peak.stop()

    def step_ended(self) -> str | None:
        """Read the peak after an optimizer step; returns the message when over the budget."""
        if self._peak is None:
            return None
        self.steps_seen += 1
        self.measured_peak_bytes = max(self.measured_peak_bytes or 0, self._reading())
        done = self.steps_seen >= self.steps
        if done:
            self._peak = None  # the first steps are measured: stop reading
        if self.measured_peak_bytes > self.limit_bytes and not self.over_budget:
            self.over_budget = True  # said once; the reading goes on over the first steps
            message = self.over_message()
            if self.on_over_budget == "raise":
                raise OutOfBudgetError(message)
            if self.on_over_budget == "warn":
                warnings.warn(message, ResourceWarning, stacklevel=3)
            logger.warning(message)
            return message
        if done and not self.over_budget:
            logger.info(self.summary())
        return None

    def what(self) -> str:
        return "CUDA memory reserved" if self._cuda else "process memory (RSS)"

    def summary(self) -> str:
        if self.measured_peak_bytes is None:
            return "memfit: no step measured yet"
        return (
            f"memfit: the first {self.steps_seen} step(s) peaked at "
            f"{format_bytes(self.measured_peak_bytes)} of {self.what()}, "
            f"{'over' if self.over_budget else 'within'} the {format_bytes(self.limit_bytes)} budget"
        )

    def over_message(self) -> str:
        return (
            f"{self.summary()}; lower the per-device batch and raise gradient accumulation, "
            "or plan again with `memfit plan MODEL --budget ...`"
        )


class WatchedPeak:
    """What both trainers' callbacks report, read from their `watch`."""

    watch: PeakWatch

    @property
    def measured_peak_bytes(self) -> int | None:
        """The highest reading over the first steps (None before the first step ended)."""
        return self.watch.measured_peak_bytes

    @property
    def over_budget(self) -> bool:
        return self.watch.over_budget

    def summary(self) -> str:
        return self.watch.summary()
