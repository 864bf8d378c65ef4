"""Sharding across ranks (FSDP2): each rank keeps 1/N of parameters, gradients and state.

Effect: model states divide by the number of ranks, plus the largest block's full
parameters (and gradients, while they exist) that FSDP gathers while it runs
(`memfit.distributed.memory`); activations and inputs are not divided. The ranks are
part of the request (`nodes=`), not searched.

Apply: under torchrun, after `memfit.distributed.setup()`: shard each repeated block,
then the root (`memfit.distributed.shard`), and point the user's optimizer at the
sharded parameters in place, state included, so its parameter groups, hyper-parameters
and any scheduler built on it survive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from memfit.errors import PlanError, TechniqueError
from memfit.techniques.base import Prediction, Technique, TechniqueConfig, Training

if TYPE_CHECKING:
    from memfit.planning.inputs import PlanContext


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardingConfig(TechniqueConfig):
    """Shard model states over `nodes` ranks."""

    technique = "sharding"
    nodes: int

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise TechniqueError("sharding needs at least 2 ranks")

    def label(self) -> str:
        return f"shard {self.nodes}"


class Sharding(Technique):
    name = "sharding"
    config_type = ShardingConfig
    order = 70  # after every optimizer change: it points the final optimizer at the shards
    on_fake = False  # one process cannot run another rank's share: the bytes are divided
    role = "given"

    def supports(self, ctx: PlanContext) -> str | None:
        if ctx.request.nodes < 2:
            return "one rank"
        if not torch.distributed.is_available():
            return "this torch has no torch.distributed"
        return None

    def candidates(self, ctx: PlanContext) -> Sequence[ShardingConfig]:
        return [ShardingConfig(nodes=ctx.request.nodes)]

    def conflicts(self, config, others: Mapping[str, TechniqueConfig], ctx) -> str | None:
        if "offload" in others:
            return "offloaded optimizer state does not combine with sharding"
        if "optimizer-in-backward" in others:
            return "the update inside backward does not combine with sharding"
        return None

    def effect(self, config: ShardingConfig, prediction: Prediction, ctx: PlanContext):
        from memfit.estimator.sharded import sharding_saving

        block = ctx.facts.block_parameter_bytes

        def divide(_phase: str, cats: dict[str, int]) -> None:
            saving = sharding_saving(cats, config.nodes, block)
            total = cats["parameters"] + cats["gradients"] + cats["optimizer"]
            # Take the saving from each model-state category in proportion to its size.
            for key in ("parameters", "gradients", "optimizer"):
                if total:
                    cats[key] -= round(saving * cats[key] / total)

        return prediction.map_phases(divide)

    def apply(self, config: ShardingConfig, training: Training) -> None:
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_world_size() != config.nodes:
            raise PlanError(
                f"this plan shards over {config.nodes} ranks: start the script with torchrun "
                f"--nproc-per-node/--nnodes giving {config.nodes} processes and call "
                "memfit.distributed.setup() before plan.apply"
            )
        from memfit.distributed.shard import shard

        if any(getattr(o, "state", None) for o in (training.optimizer, training.user_optimizer)):
            raise PlanError(
                "apply a sharded plan before the optimizer's first step: its state is "
                "full-size and would not match the shards"
            )
        before = dict(training.model.named_parameters())
        shard(training.model)
        after = dict(training.model.named_parameters())
        # fully_shard swaps every parameter for a DTensor: re-point the optimizers in place.
        mapping = {id(before[name]): after[name] for name in before if name in after}
        for optimizer in {id(o): o for o in (training.optimizer, training.user_optimizer)}.values():
            repoint_optimizer(optimizer, mapping)
        training.applied.append(self.name)

    def contract_fields(self, config: ShardingConfig | None, batch_size: int) -> dict[str, Any]:
        return {}


def repoint_optimizer(
    optimizer: torch.optim.Optimizer, mapping: Mapping[int, nn.Parameter]
) -> None:
    """Replace parameters in `optimizer`'s groups (old id -> new parameter)."""
    for group in optimizer.param_groups:
        group["params"] = [mapping.get(id(p), p) for p in group["params"]]
