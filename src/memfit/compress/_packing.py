"""Pack small unsigned integers (1 to 8 bits each) densely into uint8 storage.

Hand-written because torch has no bit-packing op for widths other than 8
(`torch.uint4` and friends exist as dtypes but hold no ops on CPU); the code is
a few vectorised shifts.
"""

from __future__ import annotations

import torch

from memfit.errors import CompressError


def check_bits(bits: int) -> int:
    if not isinstance(bits, int) or not 1 <= bits <= 8:
        raise CompressError(f"bits must be an integer from 1 to 8, got {bits!r}")
    return bits


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes that `count` values of `bits` bits take once packed."""
    return (count * bits + 7) // 8


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack the integers in `values` (each in [0, 2**bits)) into a 1-D uint8 tensor.

    >>> packed = pack_bits(torch.tensor([1, 2, 3, 15]), 4)
    >>> packed.dtype, packed.numel()
    (torch.uint8, 2)
    >>> unpack_bits(packed, 4, 4).tolist()
    [1, 2, 3, 15]
    """
    check_bits(bits)
    flat = values.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise CompressError(f"values do not fit in {bits} bits; use more bits")
    if bits == 8:
        return flat.to(torch.uint8)
    if 8 % bits == 0:
        per_byte = 8 // bits
        padded = torch.zeros(packed_nbytes(flat.numel(), bits) * per_byte, dtype=torch.int64)
        padded[: flat.numel()] = flat
        shifts = torch.arange(per_byte, dtype=torch.int64) * bits
        return (padded.view(-1, per_byte) << shifts).sum(1).to(torch.uint8)
    # Widths that straddle bytes (3, 5, 6, 7): spell every value out bit by bit.
    bit_planes = (flat.unsqueeze(1) >> torch.arange(bits, dtype=torch.int64)) & 1
    stream = torch.zeros(packed_nbytes(flat.numel(), bits) * 8, dtype=torch.int64)
    stream[: bit_planes.numel()] = bit_planes.reshape(-1)
    weights = 1 << torch.arange(8, dtype=torch.int64)
    return (stream.view(-1, 8) * weights).sum(1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first `count` integers packed by `pack_bits`, as int64."""
    check_bits(bits)
    data = packed.to(torch.int64)
    if bits == 8:
        return data[:count]
    if 8 % bits == 0:
        shifts = torch.arange(8 // bits, dtype=torch.int64) * bits
        return ((data.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)[:count]
    stream = ((data.unsqueeze(1) >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)
    stream = stream[: count * bits].view(count, bits)
    return (stream << torch.arange(bits, dtype=torch.int64)).sum(1)
