"""Offload: optimizer state (and optionally gradients) on disk, updated in bounded chunks.

For a CPU machine whose RAM cannot hold Adam's state (8 bytes per parameter,
twice the fp32 weights): the state lives in memory-mapped files and each
`optimizer.step` maps, updates and unmaps one chunk at a time, so resident
memory for optimizer state stays under `max_resident_bytes`. The update is
torch's own Adam/AdamW arithmetic, so parameters match the in-memory optimizer.

Public names:

- `OffloadedOptimizer(params, "adamw", state_dir=..., max_resident_bytes=...)`:
  a drop-in `torch.optim.Optimizer` (`step`, `zero_grad`, `state_dict`,
  `load_state_dict`, plus `checkpoint()`); `OffloadedOptimizer.from_optimizer`
  moves an existing torch Adam/AdamW, state included.
- `OffloadConfig` and `apply(optimizer, config)`: the technique's apply face.
- `measure_disk_bandwidth(directory) -> DiskBandwidth`: fsync'd write and
  cache-dropped read speed of the disk behind a folder, from a 128 MiB sample.
- `effect(parameter_bytes, optimizer, max_resident_bytes, bandwidth=...) ->
  OffloadEffect`: what the planner needs: resident bytes of model states under
  offload, bytes kept on disk, and the predicted extra seconds per step.

What the bound covers: the optimizer's own resident memory during `step` (the
mapped state windows and the update's temporaries). Parameters stay in RAM; so
do gradients unless `offload_gradients=True`, which keeps at most one
parameter's gradient in RAM (it is moved to disk by a post-accumulate hook).
The kernel's page cache holds file pages too, but it is reclaimable memory, not
this process's RSS; on a machine short of RAM the reads and writes then go to
the disk, which is what `effect` predicts from the measured bandwidth.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from memfit.errors import TechniqueError
from memfit.techniques._offload_bandwidth import DiskBandwidth, measure_disk_bandwidth
from memfit.techniques._offload_optimizer import (
    DEFAULT_MAX_RESIDENT_BYTES,
    PAGE_BYTES,
    RESERVED_BYTES,
    TEMPORARY_BYTES_PER_ELEMENT,
    OffloadedOptimizer,
    chunk_elements,
    state_names,
)
from memfit.techniques._offload_store import ELEMENT_BYTES
from memfit.techniques.base import (
    ADAM_STEP_TEMPORARY_COPIES,
    SLOW,
    Prediction,
    Technique,
    TechniqueConfig,
    Training,
)

if TYPE_CHECKING:
    from memfit.planning.inputs import PlanContext

__all__ = [
    "DiskBandwidth",
    "OffloadConfig",
    "OffloadState",
    "OffloadStateConfig",
    "OffloadEffect",
    "OffloadedOptimizer",
    "apply",
    "effect",
    "measure_disk_bandwidth",
]

# float32 state values per parameter value, by optimizer name.
_STATES_PER_PARAMETER = {"adam": 2, "adamw": 2}


@dataclass(kw_only=True, slots=True)
class OffloadConfig:
    """How to offload an optimizer."""

    state_dir: str | os.PathLike[str]
    """Folder for the state files; a fast local disk (NVMe) is best."""
    max_resident_bytes: int = DEFAULT_MAX_RESIDENT_BYTES
    """Bound on the optimizer's resident memory during a step."""
    offload_gradients: bool = False
    """Move each gradient to disk as backward produces it."""

    def __post_init__(self) -> None:
        if self.max_resident_bytes <= 0:
            raise TechniqueError("max_resident_bytes must be positive; pass a size in bytes")


@dataclass(frozen=True, slots=True)
class OffloadEffect:
    """Predicted memory and time of a training step under offload."""

    resident_bytes: int
    """Model states in RAM: parameters + gradients in RAM + the optimizer's bounded chunk."""
    optimizer_resident_bytes: int
    """The optimizer's part of `resident_bytes` (state windows and temporaries)."""
    gradient_resident_bytes: int
    disk_bytes: int
    """Bytes kept in files (optimizer state, and gradients if offloaded)."""
    read_bytes_per_step: int
    write_bytes_per_step: int
    extra_seconds_per_step: float
    """Disk time added to each step at the measured bandwidth, assuming no overlap."""


def effect(
    parameter_bytes: int,
    optimizer: str = "adamw",
    max_resident_bytes: int = DEFAULT_MAX_RESIDENT_BYTES,
    *,
    bandwidth: DiskBandwidth,
    offload_gradients: bool = False,
    largest_parameter_bytes: int | None = None,
    amsgrad: bool = False,
) -> OffloadEffect:
    """Model-state bytes in RAM and the extra step time when optimizer state is offloaded.

    `parameter_bytes` counts fp32 parameters. Each step reads and writes every
    state file once (and, with offloaded gradients, writes each gradient in
    backward and reads it in the step).

    >>> bw = DiskBandwidth(write_bytes_per_s=1e9, read_bytes_per_s=2e9, sample_bytes=0,
    ...                    directory="/tmp")
    >>> e = effect(4 * 10**9, "adamw", 256 * 2**20, bandwidth=bw)
    >>> e.disk_bytes, round(e.extra_seconds_per_step, 1)
    (8000000000, 12.0)
    """
    kind = optimizer.lower()
    if kind not in _STATES_PER_PARAMETER:
        raise TechniqueError(
            f"offload supports optimizer 'adam' or 'adamw', not {optimizer!r}; pick one of those"
        )
    if offload_gradients and largest_parameter_bytes is None:
        raise TechniqueError(
            "offload_gradients=True needs largest_parameter_bytes (one gradient stays in RAM)"
        )
    numel = parameter_bytes // ELEMENT_BYTES
    n_states = len(state_names(amsgrad))
    windows = n_states + (1 if offload_gradients else 0)
    chunk = min(numel, chunk_elements(max_resident_bytes, windows))
    # The update runs parameter by parameter inside a chunk: its temporaries are sized by
    # the largest piece, at most the largest parameter.
    piece = chunk if largest_parameter_bytes is None else min(chunk, largest_parameter_bytes // 4)
    optimizer_resident = chunk * windows * ELEMENT_BYTES + piece * TEMPORARY_BYTES_PER_ELEMENT
    optimizer_resident += RESERVED_BYTES + windows * PAGE_BYTES
    state_bytes = n_states * parameter_bytes
    gradient_resident = (
        int(largest_parameter_bytes) if offload_gradients else parameter_bytes  # type: ignore[arg-type]
    )
    disk_bytes = state_bytes + (parameter_bytes if offload_gradients else 0)
    read_bytes = state_bytes + (parameter_bytes if offload_gradients else 0)
    write_bytes = read_bytes
    seconds = read_bytes / bandwidth.read_bytes_per_s + write_bytes / bandwidth.write_bytes_per_s
    return OffloadEffect(
        resident_bytes=parameter_bytes + gradient_resident + optimizer_resident,
        optimizer_resident_bytes=optimizer_resident,
        gradient_resident_bytes=gradient_resident,
        disk_bytes=disk_bytes,
        read_bytes_per_step=read_bytes,
        write_bytes_per_step=write_bytes,
        extra_seconds_per_step=seconds,
    )


def apply(optimizer: torch.optim.Optimizer, config: OffloadConfig) -> OffloadedOptimizer:
    """Replace a torch Adam/AdamW by an OffloadedOptimizer with the same groups and state."""
    return OffloadedOptimizer.from_optimizer(
        optimizer,
        state_dir=config.state_dir,
        max_resident_bytes=config.max_resident_bytes,
        offload_gradients=config.offload_gradients,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class OffloadStateConfig(TechniqueConfig):
    """Keep Adam's state in files, updated in chunks of at most `max_resident_bytes`."""

    technique = "offload"
    max_resident_bytes: int = DEFAULT_MAX_RESIDENT_BYTES

    def __post_init__(self) -> None:
        if self.max_resident_bytes < 4 * 2**20:
            raise TechniqueError("max_resident_bytes must be at least 4 MiB")

    def label(self) -> str:
        return "state offload"


class OffloadState(Technique):
    name = "offload"
    config_type = OffloadStateConfig
    kind = SLOW
    slot = "optimizer_state"
    order = 60
    on_fake = False  # the state lives in memory-mapped files, which fake tensors cannot be

    def supports(self, ctx: PlanContext) -> str | None:
        if not ctx.request.allow_offload:
            return "offload was not allowed"
        if ctx.facts.optimizer_kind not in ("adam", "adamw"):
            return f"offload keeps Adam/AdamW state on disk, not {ctx.facts.optimizer_kind}"
        if ctx.request.on_cuda:
            return "offloaded state is updated on the CPU: the parameters must be in host memory"
        if ctx.request.nodes > 1:
            return "offloaded state does not combine with sharding"
        if ctx.measurements.disk_bandwidth is None:
            return "the disk was not measured"
        return None

    def candidates(self, ctx: PlanContext) -> Sequence[OffloadStateConfig]:
        # The largest window first: fewer, larger reads at the same disk traffic.
        sizes = (DEFAULT_MAX_RESIDENT_BYTES, 64 * 2**20, 16 * 2**20, 4 * 2**20)
        return [OffloadStateConfig(max_resident_bytes=s) for s in sizes]

    def effect(self, config: OffloadStateConfig, prediction: Prediction, ctx: PlanContext):
        largest = ctx.facts.largest_parameter_bytes
        eff = effect(
            ctx.facts.parameter_bytes,
            "adamw",
            config.max_resident_bytes,
            bandwidth=ctx.measurements.disk_bandwidth,
            largest_parameter_bytes=largest,
        )

        def to_disk(phase: str, cats: dict[str, int]) -> None:
            # On disk between steps; during the step, one bounded window at a time, whose
            # temporaries replace those of the in-memory step the fake run measured.
            cats["optimizer"] = eff.optimizer_resident_bytes if phase == "optimizer_step" else 0
            if phase == "optimizer_step":
                cats["other"] = max(0, cats["other"] - ADAM_STEP_TEMPORARY_COPIES * largest)

        return prediction.map_phases(to_disk).with_time(
            extra_s=prediction.time.extra_s + eff.extra_seconds_per_step
        )

    def apply(self, config: OffloadStateConfig, training: Training) -> None:
        state_dir = tempfile.mkdtemp(prefix="memfit-offload-", dir=training.state_dir)
        training.optimizer = apply(
            training.optimizer,
            OffloadConfig(state_dir=state_dir, max_resident_bytes=config.max_resident_bytes),
        )
        training.applied.append(self.name)

    def notes(self, config: OffloadStateConfig, ctx: PlanContext) -> list[str]:
        return ["optimizer state lives in files on disk; each step reads and writes it once"]

    def contract_fields(self, config: OffloadStateConfig | None, batch_size: int) -> dict[str, Any]:
        return {
            "optimizer_state": "offload" if config else "fp32",
            "offload_resident_bytes": config.max_resident_bytes if config else None,
        }
