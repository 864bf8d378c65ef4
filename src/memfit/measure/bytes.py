"""Bytes a tensor or a module really holds, each storage counted once.

Views, tied weights and parameters that share one buffer are counted once;
sparse layouts and wrapper tensor subclasses (quantized weights and the like)
are counted by the dense storages they are made of.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

_COMPRESSED = {torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc}


def iter_storages(tensor: torch.Tensor) -> Iterator[torch.UntypedStorage]:
    """The dense storages that hold `tensor`'s data."""
    if tensor.layout == torch.sparse_coo:
        yield from iter_storages(tensor._indices())
        yield from iter_storages(tensor._values())
        return
    if tensor.layout in _COMPRESSED:
        if tensor.layout in (torch.sparse_csr, torch.sparse_bsr):
            yield from iter_storages(tensor.crow_indices())
            yield from iter_storages(tensor.col_indices())
        else:
            yield from iter_storages(tensor.ccol_indices())
            yield from iter_storages(tensor.row_indices())
        yield from iter_storages(tensor.values())
        return
    # Wrapper subclasses (torchao's quantized tensors, DTensor) hold inner tensors.
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        for name in names:
            yield from iter_storages(getattr(tensor, name))
        return
    yield tensor.untyped_storage()


def tensors_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Total bytes of the distinct storages behind `tensors`."""
    seen: dict[int, torch.UntypedStorage] = {}  # keep storages alive so ids stay unique
    for tensor in tensors:
        for storage in iter_storages(tensor):
            seen.setdefault(id(storage), storage)
    return sum(s.nbytes() for s in seen.values())


def module_bytes(module: nn.Module, *, buffers: bool = True) -> int:
    """Bytes held by a module's parameters (and buffers), shared storages counted once."""
    tensors: list[torch.Tensor] = list(module.parameters())
    if buffers:
        tensors += list(module.buffers())
    return tensors_bytes(tensors)
