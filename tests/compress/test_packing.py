from __future__ import annotations

import pytest
import torch

from memfit.compress._packing import pack_bits, packed_nbytes, unpack_bits
from memfit.errors import CompressError


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_round_trips_every_width(bits):
    values = torch.randint(0, 1 << bits, (1001,))
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == packed_nbytes(1001, bits) == (1001 * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, bits, 1001), values)


def test_value_too_wide_is_refused():
    with pytest.raises(CompressError, match="4 bits"):
        pack_bits(torch.tensor([16]), 4)
