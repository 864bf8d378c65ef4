"""Where the kept weights of a pruned matrix sit: a CSR skeleton, plain or packed.

Two encodings of the same positions (row-major order, so values line up with CSR):

- `index_bits=None`: CSR row pointers and int32 column indices, the layout
  `torch.sparse.mm` computes with. 4 bytes of index per kept weight, so with
  fp32 values a sparse matrix is only smaller than the dense one above 50%
  sparsity (8 bytes per kept weight against 4 per weight).
- `index_bits=b` (Deep Compression, Han et al. 2016, section 2): the gap to the
  previous kept weight in `b` bits. A gap longer than the largest code is bridged
  by an escape code that advances without keeping anything (Han et al. insert
  zero-valued fillers instead; an escape keeps the values free of fake zeros).
  The CSR skeleton is rebuilt on each forward, so it costs time and transient
  memory for one layer at a time, never held memory.
"""

from __future__ import annotations

import torch
from torch import nn

from memfit.compress._packing import check_bits, pack_bits, unpack_bits
from memfit.errors import CompressError


class SparsePositions(nn.Module):
    """Positions of the kept entries of a `rows x cols` matrix."""

    def __init__(
        self,
        rows: int,
        cols: int,
        nnz: int,
        index_bits: int | None,
        tensors: dict[str, torch.Tensor],
        codes: int = 0,
    ):
        super().__init__()
        self.rows, self.cols, self.nnz, self.index_bits = rows, cols, nnz, index_bits
        self.codes = codes  # packed gap codes, escapes included
        if index_bits is None:
            self.register_buffer("crow", tensors["crow"])
            self.register_buffer("col", tensors["col"])
        else:
            check_bits(index_bits)
            if index_bits < 2:
                raise CompressError("index_bits must be at least 2 (one code is the escape)")
            self.register_buffer("gaps", tensors["gaps"])
        if rows * cols >= 2**31:
            raise CompressError("a matrix with 2**31 or more entries cannot use int32 indices")

    @classmethod
    def from_mask(cls, mask: torch.Tensor, index_bits: int | None = None) -> SparsePositions:
        """Positions of the True entries of a 2-D boolean mask."""
        rows, cols = mask.shape
        flat = mask.reshape(-1).nonzero().squeeze(1)
        nnz = flat.numel()
        if index_bits is None:
            counts = torch.bincount(flat // cols, minlength=rows)
            crow = torch.zeros(rows + 1, dtype=torch.int32)
            crow[1:] = counts.cumsum(0)
            return cls(rows, cols, nnz, None, {"crow": crow, "col": (flat % cols).to(torch.int32)})
        escape = (1 << index_bits) - 1
        gaps = torch.diff(flat, prepend=torch.tensor([-1]))  # >= 1
        # A gap g needs (g - 1) // escape escapes, then the code of what is left.
        escapes = (gaps - 1) // escape
        last = gaps - escapes * escape - 1
        per_entry = escapes + 1
        codes = torch.full((int(per_entry.sum()),), escape, dtype=torch.int64)
        codes[per_entry.cumsum(0) - 1] = last
        return cls(
            rows, cols, nnz, index_bits, {"gaps": pack_bits(codes, index_bits)}, codes=codes.numel()
        )

    def flat_positions(self) -> torch.Tensor:
        """Row-major indices of the kept entries (int64)."""
        if self.index_bits is None:
            rows = torch.repeat_interleave(
                torch.arange(self.rows), torch.diff(self.crow.to(torch.int64))
            )
            return rows * self.cols + self.col.to(torch.int64)
        escape = (1 << self.index_bits) - 1
        codes = unpack_bits(self.gaps, self.index_bits, self.codes)
        advance = torch.where(codes == escape, escape, codes + 1)
        return (advance.cumsum(0) - 1)[codes != escape]

    def csr_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(crow, col) as int32 tensors for `torch.sparse_csr_tensor`."""
        if self.index_bits is None:
            return self.crow, self.col
        flat = self.flat_positions()
        counts = torch.bincount(flat // self.cols, minlength=self.rows)
        crow = torch.zeros(self.rows + 1, dtype=torch.int32)
        crow[1:] = counts.cumsum(0)
        return crow, (flat % self.cols).to(torch.int32)

    def entry_rows(self) -> torch.Tensor:
        """The row of every kept entry (for per-row scales)."""
        crow, _ = self.csr_indices()
        return torch.repeat_interleave(torch.arange(self.rows), torch.diff(crow.to(torch.int64)))

    def mask(self) -> torch.Tensor:
        out = torch.zeros(self.rows * self.cols, dtype=torch.bool)
        out[self.flat_positions()] = True
        return out.view(self.rows, self.cols)

    def spec(self) -> dict:
        return {
            "rows": self.rows,
            "cols": self.cols,
            "nnz": self.nnz,
            "index_bits": self.index_bits,
            "codes": self.codes,
        }

    @classmethod
    def from_spec(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> SparsePositions:
        return cls(
            spec["rows"],
            spec["cols"],
            spec["nnz"],
            spec["index_bits"],
            tensors,
            codes=int(spec["codes"]),
        )

    def extra_repr(self) -> str:
        enc = "int32 CSR" if self.index_bits is None else f"{self.index_bits}-bit gaps"
        return f"{self.rows}x{self.cols}, nnz={self.nnz}, {enc}"
