"""How the kept weights' values are stored: fp32, quantized integers, or a codebook.

Each store decodes to a 1-D float tensor with one value per kept weight (row-major,
so it lines up with `SparsePositions` or with a dense `rows x cols` matrix).
Tensors that change in fine-tuning are Parameters (the fp32 values, a codebook);
the integer codes are buffers, so `module_bytes` counts everything once.
"""

from __future__ import annotations

import torch
from torch import nn

from memfit.compress._packing import check_bits, pack_bits, unpack_bits
from memfit.errors import CompressError


class FloatValues(nn.Module):
    """Plain fp32 values (what pruning alone keeps)."""

    kind = "float"

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.values = nn.Parameter(values.detach().reshape(-1).clone())

    @property
    def count(self) -> int:
        return self.values.numel()

    def decode(self, entry_rows: torch.Tensor | None = None) -> torch.Tensor:
        return self.values

    def spec(self) -> dict:
        return {"kind": self.kind}

    @classmethod
    def from_spec(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> FloatValues:
        return cls(tensors["values"])


class QuantizedValues(nn.Module):
    """Symmetric per-row (per output channel) integers: value = code * scale[row].

    8 bits are stored as int8; fewer bits are packed, two 4-bit codes to a byte.
    """

    kind = "quantized"

    def __init__(self, bits: int, count: int, rows: int, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.bits, self.count, self.rows = check_bits(bits), count, rows
        if bits < 2:
            raise CompressError("quantization needs at least 2 bits; use bits=8 or bits=4")
        self.register_buffer("codes", tensors["codes"])
        self.register_buffer("scale", tensors["scale"])

    @classmethod
    def encode(
        cls, values: torch.Tensor, entry_rows: torch.Tensor, rows: int, bits: int
    ) -> QuantizedValues:
        """Quantize `values`, whose entry i belongs to row `entry_rows[i]`."""
        check_bits(bits)
        values = values.detach().reshape(-1).float()
        top = (1 << (bits - 1)) - 1  # symmetric range [-top, top]: zero stays exactly zero
        row_max = torch.zeros(rows).scatter_reduce(0, entry_rows, values.abs(), "amax")
        scale = torch.where(row_max > 0, row_max / top, torch.ones_like(row_max))
        codes = torch.round(values / scale[entry_rows]).clamp_(-top, top).to(torch.int64)
        stored = codes.to(torch.int8) if bits == 8 else pack_bits(codes + top + 1, bits)
        return cls(bits, values.numel(), rows, {"codes": stored, "scale": scale})

    def integer_codes(self) -> torch.Tensor:
        if self.bits == 8:
            return self.codes
        top = (1 << (self.bits - 1)) - 1
        return (unpack_bits(self.codes, self.bits, self.count) - top - 1).to(torch.int8)

    def decode(self, entry_rows: torch.Tensor | None = None) -> torch.Tensor:
        codes = self.integer_codes().float()
        if entry_rows is None:  # dense: entries are the full matrix, row by row
            return (codes.view(self.rows, -1) * self.scale.unsqueeze(1)).reshape(-1)
        return codes * self.scale[entry_rows]

    def spec(self) -> dict:
        return {"kind": self.kind, "bits": self.bits, "count": self.count, "rows": self.rows}

    @classmethod
    def from_spec(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> QuantizedValues:
        return cls(spec["bits"], spec["count"], spec["rows"], tensors)


class ClusteredValues(nn.Module):
    """Weight sharing: a codebook of `k` floats and one packed index per weight."""

    kind = "clustered"

    def __init__(self, bits: int, count: int, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.bits, self.count = check_bits(bits), count
        self.codebook = nn.Parameter(tensors["codebook"].detach().clone())
        self.register_buffer("codes", tensors["codes"])

    @classmethod
    def encode(
        cls, values: torch.Tensor, codebook: torch.Tensor, assignment: torch.Tensor
    ) -> ClusteredValues:
        k = codebook.numel()
        bits = max(1, (k - 1).bit_length())
        return cls(
            bits,
            values.numel(),
            {"codebook": codebook.float(), "codes": pack_bits(assignment, bits)},
        )

    def decode(self, entry_rows: torch.Tensor | None = None) -> torch.Tensor:
        # Indexing a Parameter sums the gradients of weights that share a centroid,
        # which is exactly Deep Compression's centroid fine-tuning.
        return self.codebook[unpack_bits(self.codes, self.bits, self.count)]

    def spec(self) -> dict:
        return {"kind": self.kind, "bits": self.bits, "count": self.count}

    @classmethod
    def from_spec(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> ClusteredValues:
        return cls(spec["bits"], spec["count"], tensors)


VALUE_KINDS = {c.kind: c for c in (FloatValues, QuantizedValues, ClusteredValues)}
