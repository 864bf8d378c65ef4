"""Bytes of live tensors counted by hand (numel x element_size), for benchmarks that check
memfit's own counts against them: a quantized tensor subclass (torchao's optimizer state
and int8 weights) by the plain tensors inside it, each distinct tensor once."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def tensor_bytes(t: torch.Tensor) -> int:
    if hasattr(type(t), "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def distinct_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total
