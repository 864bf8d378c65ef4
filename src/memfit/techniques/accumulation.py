"""Micro-batches with gradient accumulation: the effective batch stays what was asked.

Effect: activations and temporaries scale with the micro-batch instead of the
batch, while gradients stay alive across micro-batches; the caller still holds the
whole batch. The planner measures it by running the last micro-batch's step,
gradients already present, on fake tensors.

Apply: the batch is split along its first dimension; each micro-batch's loss is
weighted by its share of the batch's items (samples, or for a token-level loss the
tokens whose label counts), so the accumulated gradient equals the full batch's.
Layers that look at the whole batch (BatchNorm) see smaller batches: statistics
differ, which the plan says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from memfit.budget import format_bytes
from memfit.errors import TechniqueError
from memfit.techniques.base import (
    Prediction,
    Technique,
    TechniqueConfig,
    Training,
)

if TYPE_CHECKING:
    from memfit.planning.inputs import PlanContext

MIN_BATCHNORM_MICRO = 8
"""Smallest micro-batch tried first for a model with BatchNorm: its statistics over fewer
samples are noisy enough to cost accuracy (micro-batches of 1 lost 8.7 points on digits)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MicroBatchConfig(TechniqueConfig):
    """Run each batch as micro-batches of `micro_batch_size` samples."""

    technique = "micro-batching"
    micro_batch_size: int

    def __post_init__(self) -> None:
        if self.micro_batch_size < 1:
            raise TechniqueError("micro_batch_size must be at least 1")

    def label(self) -> str:
        return f"micro {self.micro_batch_size}"


class MicroBatching(Technique):
    name = "micro-batching"
    config_type = MicroBatchConfig
    order = 10
    role = "micro"

    def candidates(self, ctx: PlanContext) -> Sequence[MicroBatchConfig]:
        """Micro-batch sizes below the batch, largest first (see `micro_sizes`)."""
        batch = ctx.request.batch_size
        return [MicroBatchConfig(micro_batch_size=m) for m in micro_sizes(batch) if m < batch]

    def effect(self, config: MicroBatchConfig, prediction: Prediction, ctx: PlanContext):
        batch = ctx.request.batch_size
        micro = config.micro_batch_size
        held = ctx.facts.batch_bytes(batch) - ctx.facts.batch_bytes(micro)

        def hold_whole_batch(_phase: str, cats: dict[str, int]) -> None:
            # The fake run saw one micro-batch; the caller holds the whole batch throughout.
            cats["other"] += held

        time_model = ctx.measurements.time_model
        return prediction.map_phases(hold_whole_batch).with_time(
            compute_s=time_model.forward_backward_s(batch, micro)
        )

    def apply(self, config: MicroBatchConfig, training: Training) -> None:
        training.settings.micro_batch_size = config.micro_batch_size
        training.applied.append(self.name)

    def fake_apply(self, config: MicroBatchConfig, training: Training) -> None:
        # Predicting it needs only the last micro-batch, with every gradient already there.
        training.run_batch_size = config.micro_batch_size
        training.gradients_present = True
        training.applied.append(self.name)

    def notes(self, config: MicroBatchConfig, ctx: PlanContext) -> list[str]:
        notes = []
        micro = config.micro_batch_size
        if ctx.facts.has_batchnorm:
            notes.append(
                f"the model has BatchNorm: micro-batches of {micro} change its batch "
                "statistics, so training is not exactly the full-batch one"
            )
            if micro < MIN_BATCHNORM_MICRO:
                notes.append(
                    f"micro-batches under {MIN_BATCHNORM_MICRO} were needed: BatchNorm "
                    "statistics over so few samples are noisy and can cost accuracy "
                    "(consider GroupNorm, or a larger budget)"
                )
        held = ctx.facts.batch_bytes(ctx.request.batch_size)
        if held > 0.2 * ctx.request.room.usable_bytes:
            notes.append(
                f"the whole batch ({format_bytes(held)}) stays in memory while its "
                "micro-batches run: load it in pieces to save that too"
            )
        return notes

    def contract_fields(self, config: MicroBatchConfig | None, batch_size: int) -> dict[str, Any]:
        micro = config.micro_batch_size if config else batch_size
        return {"micro_batch_size": micro, "accumulation_steps": -(-batch_size // micro)}


def micro_sizes(batch: int) -> list[int]:
    """Candidate micro-batch sizes, largest first: the batch's divisors (powers of two among
    them when it has many), so the effective batch is always split into equal parts."""
    divisors = [d for d in range(batch, 0, -1) if batch % d == 0]
    return (
        divisors
        if len(divisors) <= 16
        else sorted({d for d in divisors if d & (d - 1) == 0} | {batch}, reverse=True)
    )


def micro_batches(
    batch: Any, micro_batch_size: int | None, count_items: Callable[[Any], Any] | None = None
) -> list[tuple[Any, Any]]:
    """`(piece, weight)` pairs: the batch split along dim 0, each with its share of the items.

    With no split the weight is None (the loss is used as it is). Weights are the
    micro-batch's items over the batch's (`count_items`, or samples), so for a loss that
    averages over its items the weighted losses' gradients add up to the full batch's.
    """
    if micro_batch_size is None or micro_batch_size >= batch_size_of(batch):
        return [(batch, None)]
    pieces = split_batch(batch, micro_batch_size)
    if count_items is None:
        total = sum(size for _, size in pieces)
        return [(piece, size / total) for piece, size in pieces]
    counts = [count_items(piece) for piece, _ in pieces]
    total = sum(counts)
    if isinstance(total, torch.Tensor):
        # A batch whose every label is ignored has a zero loss anyway: avoid 0/0.
        total = total.clamp(min=1)
    elif total == 0:
        total = 1
    weighted = [(piece, count / total) for (piece, _), count in zip(pieces, counts, strict=True)]
    # A micro-batch with no label that counts adds nothing to the mean, but a loss that
    # averages over its labels is 0/0 = NaN there, and NaN * 0 is still NaN: leave it out.
    counted = [
        (piece, weight)
        for (piece, weight), count in zip(weighted, counts, strict=True)
        if bool(count != 0)
    ]
    return counted or weighted


def split_batch(batch: Any, micro_batch_size: int) -> list[tuple[Any, int]]:
    """Split every tensor in `batch` along dim 0; returns (micro-batch, its size) pairs."""
    size = batch_size_of(batch)
    if micro_batch_size < 1:
        raise TechniqueError("micro_batch_size must be at least 1")
    out = []
    for start in range(0, size, micro_batch_size):
        stop = min(size, start + micro_batch_size)
        out.append((_slice(batch, start, stop), stop - start))
    return out


def batch_size_of(batch: Any) -> int:
    from memfit.measure.step import batch_tensors

    sizes = {t.shape[0] for t in batch_tensors(batch) if t.ndim > 0}
    if len(sizes) != 1:
        raise TechniqueError(
            f"cannot split the batch into micro-batches: its tensors have first dimensions "
            f"{sorted(sizes) or 'none'}; every tensor must share the batch dimension"
        )
    return sizes.pop()


def _slice(value: Any, start: int, stop: int) -> Any:
    if isinstance(value, torch.Tensor):
        return value[start:stop] if value.ndim > 0 else value
    if isinstance(value, Mapping):
        return {k: _slice(v, start, stop) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_slice(v, start, stop) for v in value)
    if isinstance(value, list):
        return [_slice(v, start, stop) for v in value]
    return value


def has_batch_statistics(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def prefill_gradients(model: nn.Module) -> None:
    """Give every trainable parameter a zero gradient: the state of a later micro-batch."""
    for param in model.parameters():
        if param.requires_grad and param.grad is None:
            param.grad = torch.zeros_like(param)
