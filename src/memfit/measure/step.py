"""One training step, split into the phases memory is reported by."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from memfit.workload import Batch, Workload

PhaseHook = Callable[[str], None]


def autocast_context(precision: str, device: str):
    """bf16/fp16 autocast for the forward pass; fp32 runs as is."""
    if precision == "fp32":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type=device_type, dtype=dtype)


def training_step(
    workload: Workload,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    on_phase: PhaseHook | None = None,
) -> torch.Tensor:
    """Forward, backward, optimizer step, zero_grad; returns the detached loss."""
    mark = on_phase or (lambda _phase: None)
    mark("forward")
    with autocast_context(precision, device):
        loss = workload.loss(model, batch)
    mark("backward")
    loss.backward()
    mark("optimizer_step")
    optimizer.step()
    mark("zero_grad")
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def batch_tensors(batch: Batch) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []

    def walk(value):
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (tuple, list)):
            for v in value:
                walk(v)

    walk(batch)
    return out
