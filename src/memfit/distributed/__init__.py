"""Sharding across ranks and machines with PyTorch FSDP2 on torch.distributed.

setup / teardown      join the process group torchrun started (gloo on CPU, NCCL on CUDA)
shard                 FSDP2 per block, then the root; with checkpointing and precision
step                  one optimizer step with micro-batches and deferred gradient sync
per_rank_bytes        model-state bytes per rank when sharded N ways
min_ranks             the fewest ranks whose model states fit a budget
local_bytes           bytes this rank holds (local shards of DTensors)
"""

from __future__ import annotations

from memfit.distributed.memory import RankBytes, min_ranks, per_rank_bytes
from memfit.distributed.process_group import local_bytes, setup, teardown
from memfit.distributed.shard import shard, step

__all__ = [
    "RankBytes",
    "local_bytes",
    "min_ranks",
    "per_rank_bytes",
    "setup",
    "shard",
    "step",
    "teardown",
]
