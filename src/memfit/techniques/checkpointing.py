"""Activation checkpointing: keep a unit's input, recompute its insides during backward.

Effect: the activations a checkpointed unit saved are replaced by its input, and
its forward runs a second time in backward (Chen et al. 2016: O(sqrt n) memory
for one extra forward). The planner measures the effect exactly by running the
checkpointed step on fake tensors; `select_units` picks what to checkpoint.

Apply: the unit's `forward` is replaced on the instance by a call through
`torch.utils.checkpoint.checkpoint(use_reentrant=False)`, so module names and
state_dict keys do not change, and applying twice is harmless. A `Sequential`
can instead run as `checkpoint_sequential` segments (sqrt(n) of them by default),
which keeps only segment boundaries: the textbook O(sqrt n).

Non-reentrant checkpointing is used because the reentrant kind saves nothing
when the unit's inputs do not require grad (the first block of a network), a
pitfall users report (pytorch#147449 and others).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

from memfit.errors import TechniqueError
from memfit.techniques.base import Prediction, Technique, TechniqueConfig, Training
from memfit.techniques.blocks import find_blocks

if TYPE_CHECKING:
    from memfit.memory_profile import ModuleRow
    from memfit.planning.inputs import PlanContext


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckpointConfig(TechniqueConfig):
    """Checkpoint `modules` one by one, or run those Sequential containers as `segments`."""

    technique = "checkpointing"
    modules: tuple[str, ...]
    segments: int | None = None

    def __post_init__(self) -> None:
        if not self.modules:
            raise TechniqueError("checkpointing needs at least one module name")
        if self.segments is not None and self.segments < 1:
            raise TechniqueError("checkpoint segments must be at least 1")

    def label(self) -> str:
        if self.segments:
            return f"ckpt {self.segments} segments"
        return f"ckpt {len(self.modules)}"


class Checkpointing(Technique):
    name = "checkpointing"
    config_type = CheckpointConfig
    order = 20
    role = "checkpoint"

    def supports(self, ctx: PlanContext) -> str | None:
        return None if ctx.facts.units else "the model has no submodules to checkpoint"

    def options(
        self, ctx: PlanContext, select: Callable[[int], CheckpointConfig | None]
    ) -> Iterator[Callable[[int], CheckpointConfig | None]]:
        """Ways to checkpoint, each a function of the micro-batch size: none, the cheapest
        units that cover what is missing (`select`), every unit, sqrt(n) segments."""
        yield lambda _micro: None
        yield select
        units = ctx.facts.units
        all_units = CheckpointConfig(modules=tuple(units))
        yield lambda _micro: all_units
        if ctx.facts.sequential:
            length = max(2, round(math.sqrt(len(units))))
            segments = CheckpointConfig(modules=tuple(ctx.facts.sequential), segments=length)
            yield lambda _micro: segments

    def effect(self, config: CheckpointConfig, prediction: Prediction, ctx: PlanContext):
        tm = ctx.measurements.time_model
        batch = ctx.request.batch_size
        if config.segments:
            fraction = (config.segments - 1) / config.segments
            children = [
                u
                for u in tm.unit_forward_per_sample_s
                if any(u.startswith(c + ".") for c in config.modules)
            ]
            recompute = tm.recompute_s(children, batch, fraction)
        else:
            recompute = tm.recompute_s(list(config.modules), batch)
        return prediction.with_time(recompute_s=prediction.time.recompute_s + recompute)

    def apply(self, config: CheckpointConfig, training: Training) -> None:
        if config.segments:
            for name in config.modules:
                checkpoint_segments(training.model, name, config.segments)
        else:
            checkpoint_modules(training.model, list(config.modules))
        training.applied.append(self.name)

    def contract_fields(self, config: CheckpointConfig | None, batch_size: int) -> dict[str, Any]:
        return {
            "checkpointed": list(config.modules) if config else [],
            "checkpoint_segments": config.segments if config else None,
        }


def units_for(
    rows: list[ModuleRow],
    units: list[str],
    input_bytes: dict[str, int],
    forward_s: dict[str, float],
    need_bytes: int,
) -> list[str]:
    """The cheapest units whose savings cover `need_bytes`, from a profile's module rows."""
    acts: dict[str, int] = {}
    for row in rows:
        for unit in units:
            if row.name == unit or row.name.startswith(unit + "."):
                acts[unit] = acts.get(unit, 0) + row.activations
    candidates = [
        Unit(u, acts.get(u, 0), input_bytes.get(u, 0), forward_s.get(u, 1e-6)) for u in units
    ]
    chosen = set(select_units(candidates, need_bytes))
    return [u for u in units if u in chosen]  # in forward order: one name per set


_ORIGINAL = "_memfit_original_forward"


def checkpoint_modules(model: nn.Module, names: list[str]) -> list[str]:
    """Checkpoint each named submodule; returns the names newly checkpointed."""
    done = []
    modules = dict(model.named_modules())
    for name in names:
        module = modules.get(name)
        if module is None:
            raise TechniqueError(f"cannot checkpoint {name!r}: the model has no such module")
        if hasattr(module, _ORIGINAL):
            continue
        original = module.forward
        setattr(module, _ORIGINAL, original)

        @functools.wraps(original)
        def forward(*args, _original=original, **kwargs):
            return checkpoint(_original, *args, use_reentrant=False, **kwargs)

        module.forward = forward
        done.append(name)
    return done


def checkpoint_segments(model: nn.Module, container: str, segments: int | None = None) -> int:
    """Run a Sequential as `segments` checkpointed segments (default sqrt of its length)."""
    seq = dict(model.named_modules()).get(container)
    if not isinstance(seq, nn.Sequential):
        raise TechniqueError(
            f"segment checkpointing needs an nn.Sequential; {container!r} is {type(seq).__name__}"
        )
    if hasattr(seq, _ORIGINAL):
        return getattr(seq, "_memfit_segments", 0)
    count = segments or max(1, round(math.sqrt(len(seq))))
    setattr(seq, _ORIGINAL, seq.forward)
    seq._memfit_segments = count

    def forward(x):
        return checkpoint_sequential(seq, count, x, use_reentrant=False)

    seq.forward = forward
    return count


def remove_checkpointing(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, _ORIGINAL):
            module.forward = getattr(module, _ORIGINAL)
            delattr(module, _ORIGINAL)
            if hasattr(module, "_memfit_segments"):
                del module._memfit_segments
            if "forward" in vars(module):
                del module.forward


def checkpointed_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if hasattr(module, _ORIGINAL)]


@dataclass
class Unit:
    """A candidate for checkpointing: what it saves, what keeping its input costs, its time."""

    name: str
    activation_bytes: int
    input_bytes: int
    forward_s: float

    @property
    def saving_bytes(self) -> int:
        return max(0, self.activation_bytes - self.input_bytes)


def candidate_units(model: nn.Module) -> list[str]:
    """The repeated blocks when the model has them, else its top-level children."""
    blocks = [name for name, _ in find_blocks(model)]
    if blocks:
        return blocks
    return [name for name, child in model.named_children() if any(True for _ in child.parameters())]


def select_units(units: list[Unit], need_bytes: int) -> list[str]:
    """Cheapest set of units (by forward time) whose savings cover `need_bytes`.

    A covering knapsack solved greedily by saving per second of recompute; the planner
    checks the result on fake tensors and asks again for more when the savings fell short.
    """
    if need_bytes <= 0:
        return []
    ranked = sorted(
        (u for u in units if u.saving_bytes > 0),
        key=lambda u: u.saving_bytes / max(u.forward_s, 1e-9),
        reverse=True,
    )
    chosen, saved = [], 0
    for unit in ranked:
        if saved >= need_bytes:
            break
        chosen.append(unit.name)
        saved += unit.saving_bytes
    return chosen


def unit_input_bytes(model: nn.Module, names: list[str], run_forward) -> dict[str, int]:
    """Bytes of the tensors each unit receives (kept alive when it is checkpointed)."""
    sizes: dict[str, int] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in names:

        def hook(_module, args, kwargs, _name=name):
            total = 0
            for value in (*args, *kwargs.values()):
                if isinstance(value, torch.Tensor) and value.requires_grad is not None:
                    total += value.numel() * value.element_size()
            sizes[_name] = sizes.get(_name, 0) + total

        handles.append(modules[name].register_forward_pre_hook(hook, with_kwargs=True))
    try:
        run_forward()
    finally:
        for h in handles:
            h.remove()
    return sizes
