"""Train a small model sharded over every rank and report losses and per-rank bytes.

Run it where you mean to train, before the real job, to see that the ranks
find each other and that sharding divides the model states:

    torchrun --nproc-per-node 2 --standalone -m memfit.distributed.check
    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 -m memfit.distributed.check   # on each machine

Each configuration (plain FSDP2; checkpointing with two micro-batches; bfloat16
compute) trains a few steps on the same global batches as a single process
would, so the losses can be compared with `single_process_losses`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from memfit.distributed.process_group import local_bytes, setup, teardown
from memfit.distributed.shard import shard, step

GLOBAL_BATCH = 16
IN_FEATURES = 16
CLASSES = 4
CONFIGS: dict[str, dict] = {
    "plain": {},
    "checkpoint_accumulate": {"checkpoint": True, "accumulation_steps": 2},
    "bf16": {"param_dtype": torch.bfloat16, "reduce_dtype": torch.float32},
}


class Block(nn.Module):
    """A residual MLP block: the unit that is checkpointed and sharded."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, width)
        self.down = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(nn.functional.gelu(self.up(x)))


def make_model(width: int = 32, depth: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(IN_FEATURES, width),
        *[Block(width) for _ in range(depth)],
        nn.Linear(width, CLASSES),
    )


def global_batch(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + index)
    return torch.randn(GLOBAL_BATCH, IN_FEATURES, generator=g), torch.randint(
        0, CLASSES, (GLOBAL_BATCH,), generator=g
    )


def _split(config: dict) -> tuple[dict, int]:
    options = dict(config)
    return options, options.pop("accumulation_steps", 1)


def model_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Local bytes of parameters plus optimizer state (shards only, for DTensors)."""
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return local_bytes(list(model.parameters()) + state)


def single_process_losses(config: dict, steps: int) -> tuple[list[float], int]:
    """The same training in one process, unsharded and in float32: (losses, model-state bytes)."""
    _, accumulation = _split(config)
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for i in range(steps):
        x, y = global_batch(i)
        losses.append(
            step(
                model, optimizer, x, y, nn.functional.cross_entropy, accumulation_steps=accumulation
            )
        )
    return losses, model_state_bytes(model, optimizer)


def sharded_run(config: dict, steps: int, mesh, device: str) -> dict:
    """Train under FSDP2 on this rank's share of each global batch."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
    from torch.distributed.fsdp import FSDPModule

    options, accumulation = _split(config)
    rank, world = dist.get_rank(), dist.get_world_size()
    model = shard(make_model().to(device), mesh=mesh, **options)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for i in range(steps):
        x, y = (t.chunk(world)[rank].to(device) for t in global_batch(i))
        losses.append(
            step(
                model, optimizer, x, y, nn.functional.cross_entropy, accumulation_steps=accumulation
            )
        )
    return {
        "losses": losses,
        "model_state_bytes": model_state_bytes(model, optimizer),
        "checkpointed_blocks": sum(isinstance(m, CheckpointWrapper) for m in model.modules()),
        "sharded_modules": sum(isinstance(m, FSDPModule) for m in model.modules()),
    }


def main(argv: list[str] | None = None) -> int:
    from memfit.measure.process import ProcessPeak

    parser = argparse.ArgumentParser(prog="python -m memfit.distributed.check")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--out", type=Path, help="folder for one rank<N>.json per rank")
    args = parser.parse_args(argv)
    mesh = setup(args.device)
    device = mesh.device_type
    try:
        peak = ProcessPeak(device)
        peak.start()
        results = {
            name: sharded_run(config, args.steps, mesh, device) for name, config in CONFIGS.items()
        }
        report = {
            "rank": dist.get_rank(),
            "world_size": dist.get_world_size(),
            "device": device,
            "peak_bytes": peak.stop(),
            "configs": results,
        }
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            target = args.out / f"rank{report['rank']}.json"
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(report))
            os.replace(tmp, target)
        if report["rank"] == 0:
            for name, r in results.items():
                losses = ", ".join(f"{v:.4f}" for v in r["losses"])
                print(f"{name}: losses {losses}; rank 0 model states {r['model_state_bytes']} B")
    finally:
        teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
