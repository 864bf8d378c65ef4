from __future__ import annotations

import warnings

import pytest
import torch

from memfit.compress._positions import SparsePositions
from memfit.measure.bytes import tensors_bytes


@pytest.mark.parametrize("index_bits", [None, 2, 4, 8])
def test_positions_round_trip_and_match_torch_csr(index_bits):
    torch.manual_seed(0)
    mask = torch.rand(37, 300) > 0.93
    mask[5] = False  # an empty row
    mask[7, 299] = True  # a long gap (escape codes) at a row end
    positions = SparsePositions.from_mask(mask, index_bits)
    assert torch.equal(positions.mask(), mask)
    crow, col = positions.csr_indices()
    with warnings.catch_warnings():  # torch flags CSR support as beta
        warnings.simplefilter("ignore", UserWarning)
        reference = mask.float().to_sparse_csr()
    assert torch.equal(crow.long(), reference.crow_indices())
    assert torch.equal(col.long(), reference.col_indices())
    assert positions.nnz == int(mask.sum())


def test_packed_gaps_hold_less_than_int32_indices():
    mask = torch.rand(256, 256) > 0.9
    plain = tensors_bytes(SparsePositions.from_mask(mask).buffers())
    packed = tensors_bytes(SparsePositions.from_mask(mask, 4).buffers())
    assert plain >= 4 * int(mask.sum())
    assert packed < plain / 4
