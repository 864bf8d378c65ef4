"""MemoryProfile: where one training step's memory went, measured or estimated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CATEGORIES = ("parameters", "gradients", "optimizer", "activations", "other")


@dataclass
class ModuleRow:
    """One module's share: its own parameters (not its children's) and what it saved for backward."""

    name: str
    type: str
    parameters: int
    activations: int
    forward_s: float | None = None
    """Inclusive forward time in the measured step (children included)."""


@dataclass
class MemoryProfile:
    """A training step's memory: the peak, what it was made of, and which module held what."""

    method: str
    """`measured` (a real step) or `estimated` (fake tensors, nothing allocated)."""
    device: str
    batch_size: int
    peak_bytes: int
    """Highest total of live tensor bytes during the step."""
    categories: dict[str, int]
    """Bytes per category at the peak; they add up to `peak_bytes`."""
    peak_phase: str
    """`forward`, `backward` or `optimizer_step`: the phase in which the peak happened."""
    phase_peaks: dict[str, int]
    modules: list[ModuleRow]
    workload: str = ""
    optimizer: str = "adam"
    precision: str = "fp32"
    rss_peak_bytes: int | None = None
    """Measured only: the process high-water mark during the step (RSS on CPU, allocator on CUDA)."""
    process_step_bytes: int | None = None
    """Measured only: that high-water mark less the process's non-tensor memory before the step
    (its memory then, less the parameters, state and inputs alive at that moment)."""
    process_phase_peaks: dict[str, int] | None = None
    """Measured only: the process's high-water mark in each phase (reset as each begins), less
    the same non-tensor memory as `process_step_bytes`."""
    step_time_s: float | None = None
    phase_categories: dict[str, dict[str, int]] = field(default_factory=dict)
    """Bytes per category at each phase's own peak."""
    config: dict[str, Any] = field(default_factory=dict)
    timeline: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def parameter_bytes(self) -> int:
        return sum(row.parameters for row in self.modules)

    def to_dict(self, timeline: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not timeline:
            data.pop("timeline")
        data["categories"] = {k: int(self.categories.get(k, 0)) for k in CATEGORIES}
        return data

    def top_modules(self, n: int = 10) -> list[ModuleRow]:
        return sorted(self.modules, key=lambda r: r.activations + r.parameters, reverse=True)[:n]
