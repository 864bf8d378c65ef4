"""Per-rank memory when parameters, gradients and optimizer state are sharded N ways (FSDP).

The step itself is estimated on fake tensors for one rank's batch; the model states
at its peak are then divided by N, plus the largest block's full parameters and
gradients that FSDP gathers while that block runs (`memfit.distributed.memory`).
Activations and temporaries are not sharded.
"""

from __future__ import annotations

import dataclasses

from memfit.distributed.memory import per_rank_bytes
from memfit.memory_profile import MemoryProfile
from memfit.workload import Workload


def largest_block_parameter_bytes(profile: MemoryProfile, blocks: list[str]) -> int:
    """Parameter bytes of the biggest block (FSDP's unit), from the profile's module rows."""
    best = 0
    for block in blocks:
        total = sum(
            r.parameters
            for r in profile.modules
            if r.name == block or r.name.startswith(block + ".")
        )
        best = max(best, total)
    return best


def sharding_saving(categories: dict[str, int], nodes: int, block_bytes: int) -> int:
    """Bytes one rank no longer holds, at a moment with these categories, when sharded."""
    if nodes <= 1:
        return 0
    grads = categories.get("gradients", 0)
    rank = per_rank_bytes(
        categories["parameters"],
        grads,
        categories.get("optimizer", 0),
        nodes,
        largest_block_parameter_bytes=block_bytes,
        largest_block_gradient_bytes=block_bytes if grads else 0,
    )
    return categories["parameters"] + grads + categories.get("optimizer", 0) - rank.total


def shard_profile(profile: MemoryProfile, nodes: int, workload: Workload) -> MemoryProfile:
    """The same step seen by one of `nodes` ranks of a sharded (FSDP) run."""
    if nodes <= 1:
        return profile
    from torch._subclasses.fake_tensor import FakeTensorMode

    from memfit.estimator.fake_build import build_fake_model
    from memfit.techniques.blocks import find_blocks

    with FakeTensorMode():
        blocks = [name for name, _ in find_blocks(build_fake_model(workload, "cpu"))]
    block_bytes = largest_block_parameter_bytes(profile, blocks)
    cats = dict(profile.categories)
    grads_present = cats["gradients"] > 0
    rank = per_rank_bytes(
        cats["parameters"],
        cats["gradients"],
        cats["optimizer"],
        nodes,
        largest_block_parameter_bytes=block_bytes,
        largest_block_gradient_bytes=block_bytes if grads_present else 0,
    )
    cats["parameters"] = rank.parameters + block_bytes
    cats["gradients"] = rank.gradients + (block_bytes if grads_present else 0)
    cats["optimizer"] = rank.optimizer
    peak = sum(cats.values())
    # Other moments of the step shift by the same amount: an approximation (the model
    # states alive differ a little between phases) that keeps the phase that peaks.
    shift = profile.peak_bytes - peak
    phase_peaks = {k: max(0, v - shift) if v else v for k, v in profile.phase_peaks.items()}
    return dataclasses.replace(
        profile,
        categories=cats,
        peak_bytes=peak,
        phase_peaks=phase_peaks,
        config={**profile.config, "nodes": nodes},
    )
