"""Optimizers by name, so profiles, estimates and plans speak of the same thing."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from memfit.errors import UnknownOptimizerError, require

OPTIMIZERS = ("sgd", "adam", "adamw", "adam8bit", "adam4bit")


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], lr: float | None = None
) -> torch.optim.Optimizer:
    """`sgd` is SGD with momentum 0.9 (one state tensor per parameter); `adam`/`adamw` keep two.

    `adam8bit` / `adam4bit` are torchao's AdamW8bit / AdamW4bit (block-wise quantized states).
    """
    key = name.lower()
    params = list(params)
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr or 0.01, momentum=0.9)
    if key == "adam":
        return torch.optim.Adam(params, lr=lr or 1e-3)
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr or 1e-3)
    if key in ("adam8bit", "adam4bit"):
        low_bit = require("torchao.optim", "lowbit")
        cls = low_bit.AdamW8bit if key == "adam8bit" else low_bit.AdamW4bit
        return cls(params, lr=lr or 1e-3)
    raise UnknownOptimizerError(
        f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}"
    )


def build_optimizer(workload, name: str | None, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer a step of `workload` uses: `name`, or the workload's own when None."""
    if name is None and workload is not None and workload.build_optimizer is not None:
        return workload.build_optimizer(model)
    return make_optimizer(name or "adam", model.parameters())


def optimizer_label(workload, name: str | None) -> str:
    """The name reports use: the one asked for, `adam` by default, or the workload's own."""
    if name is not None:
        return name
    if workload is not None and workload.build_optimizer is not None:
        return "workload"
    return "adam"
