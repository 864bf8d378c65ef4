"""Per-rank model-state bytes under ZeRO-3 / FSDP sharding, and the fewest ranks that fit.

Each rank keeps 1/N of the parameters, gradients and optimizer state (FSDP pads
every tensor's first dimension to a multiple of N, so shards round up), and
while a block runs forward or backward it holds that block's full, unsharded
parameters and gradients. This is DeepSpeed's ZeRO-3 model-state estimate
(`18 * P / N` plus the largest layer, in their mixed-precision form) written
with the byte counts kept separate so any precision or optimizer fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from memfit.errors import DistributedError


@dataclass(frozen=True, slots=True)
class RankBytes:
    """Model-state bytes one rank holds at its peak."""

    ranks: int
    parameters: int
    """This rank's shard of the parameters."""
    gradients: int
    """This rank's shard of the gradients."""
    optimizer: int
    """This rank's shard of the optimizer state."""
    gathered: int
    """The largest block's unsharded parameters and gradients, held while it runs."""

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.gathered


def per_rank_bytes(
    parameter_bytes: int,
    gradient_bytes: int,
    optimizer_bytes: int,
    ranks: int,
    *,
    largest_block_parameter_bytes: int = 0,
    largest_block_gradient_bytes: int = 0,
) -> RankBytes:
    """Bytes of model states per rank when sharded `ranks` ways.

    One rank means no sharding: nothing is gathered.

    >>> r = per_rank_bytes(4_000, 4_000, 8_000, 4, largest_block_parameter_bytes=500,
    ...                    largest_block_gradient_bytes=500)
    >>> r.parameters, r.optimizer, r.gathered, r.total
    (1000, 2000, 1000, 5000)
    """
    if ranks < 1:
        raise DistributedError(f"ranks must be at least 1, got {ranks}")
    gathered = largest_block_parameter_bytes + largest_block_gradient_bytes if ranks > 1 else 0
    return RankBytes(
        ranks=ranks,
        parameters=math.ceil(parameter_bytes / ranks),
        gradients=math.ceil(gradient_bytes / ranks),
        optimizer=math.ceil(optimizer_bytes / ranks),
        gathered=gathered,
    )


def min_ranks(
    parameter_bytes: int,
    gradient_bytes: int,
    optimizer_bytes: int,
    budget_bytes: int,
    *,
    largest_block_parameter_bytes: int = 0,
    largest_block_gradient_bytes: int = 0,
    unsharded_bytes: int = 0,
    max_ranks: int = 4096,
) -> int | None:
    """The fewest ranks whose per-rank model states plus `unsharded_bytes` fit `budget_bytes`.

    `unsharded_bytes` is what sharding does not divide (activations, buffers,
    the process itself). Returns None when even `max_ranks` do not fit: the
    gathered block plus the unsharded bytes alone exceed the budget, so more
    machines cannot help (checkpoint activations or split the block instead).

    >>> min_ranks(4_000, 4_000, 8_000, 6_000, largest_block_parameter_bytes=500,
    ...           largest_block_gradient_bytes=500)
    4
    >>> min_ranks(4_000, 4_000, 8_000, 900, largest_block_parameter_bytes=500,
    ...           largest_block_gradient_bytes=500) is None
    True
    """
    for ranks in range(1, max_ranks + 1):
        rank = per_rank_bytes(
            parameter_bytes,
            gradient_bytes,
            optimizer_bytes,
            ranks,
            largest_block_parameter_bytes=largest_block_parameter_bytes,
            largest_block_gradient_bytes=largest_block_gradient_bytes,
        )
        if rank.total + unsharded_bytes <= budget_bytes:
            return ranks
    return None
