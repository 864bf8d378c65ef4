"""Shard a model across ranks with PyTorch FSDP2, composed with checkpointing and precision.

Order matters, as in torchtitan's `parallelize` recipes: activation
checkpointing wraps each block first (so recomputation happens inside the
sharded unit and its all-gather), then every block is sharded, then the root,
which picks up the parameters no block owns (embeddings, the head).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from memfit.errors import DistributedError
from memfit.techniques.blocks import find_blocks


def shard(
    model: nn.Module,
    *,
    mesh: object | None = None,
    checkpoint: bool = False,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = None,
    reshard_after_forward: bool = True,
    blocks: Sequence[tuple[str, nn.Module]] | None = None,
) -> nn.Module:
    """Apply FSDP2 (`fully_shard`) to each repeated block of `model`, then to the root.

    - `checkpoint`: wrap each block in non-reentrant activation checkpointing first.
    - `param_dtype` / `reduce_dtype`: FSDP2's `MixedPrecisionPolicy` (for example
      bfloat16 compute with float32 gradient reduction); the sharded master copy
      stays in the parameters' own dtype.
    - `reshard_after_forward`: free gathered parameters after forward (ZeRO-3);
      False keeps them until backward (ZeRO-2 memory, less communication).
    - `blocks`: (name, module) pairs to shard; default `find_blocks(model)`.

    Needs an initialised process group (see `setup`). Build the optimizer after
    sharding: the parameters become DTensors. A model already sharded is
    returned unchanged.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized():
        raise DistributedError(
            "no process group: call memfit.distributed.setup() in a script started by torchrun"
        )
    if isinstance(model, FSDPModule):
        return model
    found = list(find_blocks(model) if blocks is None else blocks)
    if checkpoint and not found:
        raise DistributedError(
            "checkpoint=True found no repeated blocks to wrap; pass blocks=[(name, module), ...]"
        )
    if checkpoint:
        found = [(name, _replace(model, name, checkpoint_wrapper(block))) for name, block in found]
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for _, block in found:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    # The root's parameters are needed again right at the start of backward: keep them.
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    parent_name, _, child_name = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    parent.register_module(child_name, new)
    return new


def step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    accumulation_steps: int = 1,
    sync_each_micro_batch: bool = False,
) -> float:
    """One optimizer step over this rank's batch, split into `accumulation_steps` micro-batches.

    Gradients are reduced across ranks only on the last micro-batch
    (`set_requires_gradient_sync(False)` before): less communication, but
    FSDP2 then keeps unsharded gradients between micro-batches.
    `sync_each_micro_batch=True` reduce-scatters every time and keeps only
    gradient shards: less memory, more communication. Returns the loss of the
    whole global batch (averaged over ranks), as a single process would see it.
    It runs memfit's one training step (`memfit.measure.step.TrainingStep`).
    """
    from memfit.measure.step import StepSettings, TrainingStep, loss_of

    if accumulation_steps < 1 or inputs.shape[0] % accumulation_steps:
        raise DistributedError(
            f"a batch of {inputs.shape[0]} does not split into {accumulation_steps} equal "
            "micro-batches; pick accumulation_steps that divides the per-rank batch"
        )
    micro = inputs.shape[0] // accumulation_steps
    settings = StepSettings(
        micro_batch_size=micro if accumulation_steps > 1 else None,
        device=str(inputs.device),
        reduce_every_micro_batch=sync_each_micro_batch,
    )
    total = TrainingStep(model, optimizer, loss_of(loss_fn), settings)((inputs, targets))
    total = total.float().detach().clone()
    if dist.is_initialized():
        # gloo has no AVG reduction: sum, then divide.
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        total /= dist.get_world_size()
    return float(total)
