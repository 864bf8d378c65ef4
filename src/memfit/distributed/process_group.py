"""Join the process group that torchrun set up: gloo on CPU, NCCL on CUDA."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from memfit.errors import DistributedError

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def setup(device: str | None = None):
    """Initialise torch.distributed from torchrun's environment; return a 1-D DeviceMesh.

    `device` is "cpu" (gloo) or "cuda" (NCCL, one GPU per process, chosen by
    LOCAL_RANK); by default CUDA when it is available.
    """
    from torch.distributed.device_mesh import init_device_mesh

    missing = [name for name in _TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise DistributedError(
            f"{', '.join(missing)} not set: start this script with "
            "torchrun --nproc-per-node N script.py (add --nnodes/--rdzv-endpoint for machines)"
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise DistributedError(f"device must be 'cpu' or 'cuda', not {device!r}")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return init_device_mesh(device, (dist.get_world_size(),))


def teardown() -> None:
    """Leave the process group (safe to call when none is set up)."""
    if dist.is_initialized():
        # Without a barrier a fast rank can close its gloo connections while a slow one is
        # still in its last collective, which aborts the slow one.
        dist.barrier()
        dist.destroy_process_group()


def local_bytes(tensors) -> int:
    """Bytes this rank holds for `tensors`, counting only the local shard of each DTensor."""
    from torch.distributed.tensor import DTensor

    from memfit.measure.bytes import tensors_bytes

    return tensors_bytes(t.to_local() if isinstance(t, DTensor) else t for t in tensors)
