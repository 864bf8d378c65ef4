"""Every technique the planner may use, in one list: adding one is a file and a line here."""

from __future__ import annotations

from collections.abc import Iterable

from memfit.errors import PlanError
from memfit.techniques.accumulation import MicroBatching
from memfit.techniques.activation_offload import ActivationOffload
from memfit.techniques.base import Technique, TechniqueConfig, Training
from memfit.techniques.bf16_weights import BF16Weights
from memfit.techniques.checkpointing import Checkpointing
from memfit.techniques.lora import Lora
from memfit.techniques.lowbit import LowBitState
from memfit.techniques.offload import OffloadState
from memfit.techniques.optimizer_in_backward import OptimizerInBackward
from memfit.techniques.precision import Precision
from memfit.techniques.sharding import Sharding

TECHNIQUES: tuple[Technique, ...] = (
    MicroBatching(),
    Checkpointing(),
    Precision(),
    LowBitState(),
    BF16Weights(),
    OffloadState(),
    Sharding(),
    OptimizerInBackward(),
    ActivationOffload(),
    Lora(),
)
_BY_NAME = {t.name: t for t in TECHNIQUES}


def technique(name: str) -> Technique:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise PlanError(f"unknown technique {name!r}; memfit has: {', '.join(_BY_NAME)}") from None


def of(config: TechniqueConfig) -> Technique:
    return technique(config.technique)


def in_order(configs: Iterable[TechniqueConfig]) -> list[TechniqueConfig]:
    """Configs in the order techniques apply (see each technique's `order`)."""
    return sorted(configs, key=lambda c: of(c).order)


def apply_all(configs: Iterable[TechniqueConfig], training: Training) -> Training:
    """Apply every config to `training` in order; for a fake run, only those that run on fakes."""
    for config in in_order(configs):
        tech = of(config)
        if training.fake:
            if tech.on_fake:
                tech.fake_apply(config, training)
        else:
            tech.apply(config, training)
    return training
