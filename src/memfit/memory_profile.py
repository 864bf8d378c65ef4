"""MemoryProfile: where one training step's memory went, measured or estimated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from memfit.measure.timeline import CATEGORIES, Timeline


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
    reserved_peak_bytes: int | None = None
    """CUDA only: the caching allocator's reserved peak, as `torch.cuda.max_memory_reserved`
    read it (measured) or as memfit's model of the allocator predicts it (estimated)."""
    config: dict[str, Any] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline, repr=False)
    """Live bytes by category over the step, in operation order (see `memfit.measure.timeline`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.timeline, Timeline):
            self.timeline = Timeline.from_dict(self.timeline)
        self.modules = [
            ModuleRow(**row) if isinstance(row, Mapping) else row for row in self.modules
        ]

    @property
    def parameter_bytes(self) -> int:
        return sum(row.parameters for row in self.modules)

    def to_dict(self, timeline: bool = False) -> dict[str, Any]:
        """Plain JSON types; `timeline=True` adds the compact timeline under `timeline`."""
        saved, self.timeline = self.timeline, Timeline()
        try:
            data = asdict(self)
        finally:
            self.timeline = saved
        data.pop("timeline")
        if timeline:
            data["timeline"] = saved.to_dict()
        data["categories"] = {k: int(self.categories.get(k, 0)) for k in CATEGORIES}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemoryProfile:
        """Read `to_dict()` (or `memfit profile/estimate --json`) output back; extra keys are ignored.

        >>> cats = dict.fromkeys(CATEGORIES, 0) | {"parameters": 10}
        >>> p = MemoryProfile("estimated", "cpu", 8, 10, cats, "forward", {}, [])
        >>> MemoryProfile.from_dict(p.to_dict(timeline=True)) == p
        True
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def _repr_html_(self) -> str:
        from memfit.report.notebook import profile_repr_html

        return profile_repr_html(self)

    def top_modules(self, n: int = 10) -> list[ModuleRow]:
        return sorted(self.modules, key=lambda r: r.activations + r.parameters, reverse=True)[:n]
