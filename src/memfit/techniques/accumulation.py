"""Micro-batches with gradient accumulation: the effective batch stays what was asked.

Effect: activations and temporaries scale with the micro-batch instead of the
batch, while gradients stay alive across micro-batches (the planner measures it
by running the last micro-batch's step, gradients already present, on fake tensors).

Apply: the batch is split along its first dimension; each micro-batch's loss is
weighted by its share of what the loss averages over (samples, or for a token-level
loss the tokens whose label is not ignored: `micro_batch_weights`), so the
accumulated gradient equals the full-batch gradient. Layers that look at the
whole batch (BatchNorm) see smaller batches: statistics differ, which the plan says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from memfit.errors import TechniqueError


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


def micro_batch_weights(
    pieces: list[tuple[Any, int]], count_items: Callable[[Any], int] | None = None
) -> list[float]:
    """Each micro-batch's share of the items the full batch's loss averages over.

    A mean loss over N items is the sum of each micro-batch's mean loss times n_i / N.
    With `count_items` (a token-level loss: its counted tokens), n_i is that count;
    without it, the samples in the micro-batch. A batch that counts no item at all is
    weighted by samples, so the result is still a mean.

        >>> import torch
        >>> labels = torch.tensor([[1, 2, -100, -100], [3, 4, 5, 6]])
        >>> pieces = [({"labels": labels[:1]}, 1), ({"labels": labels[1:]}, 1)]
        >>> micro_batch_weights(pieces, lambda b: int((b["labels"] != -100).sum()))
        [0.3333333333333333, 0.6666666666666666]
        >>> micro_batch_weights(pieces)
        [0.5, 0.5]
    """
    counts = [count_items(piece) for piece, _ in pieces] if count_items else []
    if not counts or sum(counts) == 0:
        counts = [size for _, size in pieces]
    total = sum(counts)
    return [count / total for count in counts]


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
    if isinstance(value, dict):
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
