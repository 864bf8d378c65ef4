"""Before a real step: would it fit the memory this machine has free right now?

`profile` allocates everything it measures, so a model too big for the machine gets the
process killed (in a notebook, the kernel dies) rather than an error. The step is
estimated first on fake tensors (seconds, nothing allocated) and compared with the
memory available: psutil's `available` on CPU, CUDA's free memory on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from memfit.budget import format_bytes
from memfit.errors import MeasureError, MemfitError


@dataclass(frozen=True)
class Headroom:
    """The estimated step against the memory free on its device."""

    estimated_peak_bytes: int
    available_bytes: int
    device: str

    @property
    def fits(self) -> bool:
        return self.estimated_peak_bytes <= self.available_bytes


def available_bytes(device: str) -> int:
    """Memory a new allocation could get now: host RAM available, or the GPU's free memory."""
    if str(device).startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def headroom(
    workload, batch_size: int | None, optimizer: str, precision: str, device: str
) -> Headroom | None:
    """The estimate against what is free; None when the model cannot run on fake tensors."""
    from memfit.estimator import estimate

    try:
        step = estimate(workload, batch_size, optimizer, precision=precision, device=device)
    except MemfitError:
        return None  # cannot tell in advance: the real step will say
    return Headroom(step.peak_bytes, available_bytes(device), device)


def check_headroom(
    workload, batch_size: int | None, optimizer: str, precision: str, device: str
) -> Headroom | None:
    """Raise MeasureError when the estimated step is larger than the memory available."""
    room = headroom(workload, batch_size, optimizer, precision, device)
    if room is not None and not room.fits:
        where = "GPU memory free" if str(device).startswith("cuda") else "memory available"
        raise MeasureError(
            f"one training step needs about {format_bytes(room.estimated_peak_bytes)} "
            f"(estimated) and this machine has {format_bytes(room.available_bytes)} of {where}: "
            "use `memfit estimate` (allocates nothing) or a smaller --batch-size, "
            "or pass --force to run it anyway"
        )
    return room
