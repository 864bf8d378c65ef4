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
