"""Which device a run may use, checked up front with an error that says what to do."""

from __future__ import annotations

import torch

from memfit.errors import MeasureError


def check_device(device: str, *, fake: bool = False) -> str:
    """Refuse a device this process cannot use; `fake` runs need CUDA support, not a GPU."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = str(device)
    if kind == "cpu":
        return device
    if kind != "cuda":
        raise MeasureError(f"device {device!r} is not supported; use cpu or cuda")
    if not torch.backends.cuda.is_built():
        raise MeasureError(
            f"--device {device}: this torch is a CPU-only build; use --device cpu "
            "or install a CUDA build of torch"
        )
    if not fake and not torch.cuda.is_available():
        raise MeasureError(
            f"--device {device}: no CUDA GPU is visible to this process; use "
            "--device cpu, or `memfit estimate --device cuda`, which needs no GPU"
        )
    return device
