"""Bytes of low-bit Adam state in torchao's layout (torchao.optim.AdamW8bit / AdamW4bit).

torchao quantizes a state tensor block-wise only when it has at least 4096 values and its
size is a multiple of the block (following bitsandbytes); smaller ones stay fp32. Each
quantized state holds codes, one fp32 scale per block and a small fp32 code map
(torchao/optim/subclass_8bit.py and subclass_4bit.py, `zeros`). Adam keeps two such states
per parameter plus a 4-byte fp32 step counter.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

LOW_BIT = {
    # name: (block size, code bits, code-map entries)
    "adam8bit": (256, 8, 256),
    "adam4bit": (128, 4, 16),
}
MIN_QUANTIZED_NUMEL = 4096


def state_bytes_for(numel: int, element_size: int, optimizer: str) -> int:
    """Optimizer-state bytes for one parameter of `numel` values under `optimizer`."""
    block, bits, qmap_entries = LOW_BIT[optimizer]
    step_bytes = 4
    if numel >= MIN_QUANTIZED_NUMEL and numel % block == 0:
        one_state = numel * bits // 8 + (numel // block) * 4 + qmap_entries * 4
    else:
        one_state = numel * element_size
    return 2 * one_state + step_bytes


def low_bit_state_bytes(params: Iterable[torch.Tensor], optimizer: str) -> int:
    return sum(
        state_bytes_for(p.numel(), p.element_size(), optimizer) for p in params if p.requires_grad
    )
