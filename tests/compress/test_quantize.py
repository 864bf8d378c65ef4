from __future__ import annotations

import pytest
import torch
from torch import nn

from memfit.compress import CompressedLinear, prune, quantize
from memfit.errors import CompressError
from memfit.measure.bytes import module_bytes


@pytest.mark.parametrize("bits", [8, 4])
def test_rounding_error_is_at_most_half_a_step_per_channel(mlp, bits):
    small, report = quantize(mlp, bits=bits)
    for original, layer in ((mlp[0], small[0]), (mlp[2], small[2])):
        step = original.weight.abs().amax(1) / ((1 << (bits - 1)) - 1)
        error = (layer.dense_weight() - original.weight).abs()
        assert (error <= step.unsqueeze(1) / 2 + 1e-7).all()
    weights = sum(m.weight.numel() for m in mlp.modules() if isinstance(m, nn.Linear))
    # codes + one fp32 scale per output channel; biases untouched
    scales_and_biases = 2 * 4 * (64 + 64 + 10)
    assert report.after_bytes == weights * bits // 8 + scales_and_biases
    assert report.before_bytes == module_bytes(mlp)


def test_int8_kernel_and_dequantized_path_agree(mlp):
    small, _ = quantize(mlp, bits=8)
    x = torch.randn(7, 32)
    with torch.no_grad():
        fused = small(x)
    x.requires_grad_(True)
    dequantized = small(x)
    torch.testing.assert_close(fused, dequantized.detach(), rtol=1e-4, atol=1e-4)


def test_quantizing_a_pruned_model_keeps_it_sparse(mlp):
    pruned, _ = prune(mlp, 0.8)
    small, report = quantize(pruned, bits=4)
    layer = small[2]
    assert isinstance(layer, CompressedLinear) and layer.sparse
    zeros_before = pruned[2].dense_weight() == 0
    assert torch.equal(layer.dense_weight() == 0, zeros_before | (layer.dense_weight() == 0))
    assert (layer.dense_weight()[zeros_before] == 0).all()
    assert report.after_bytes < report.before_bytes


def test_quantize_conv_and_refusals(cnn):
    small, _ = quantize(cnn, bits=8)
    x = torch.randn(2, 1, 8, 8)
    assert (small(x) - cnn(x)).abs().max() < 0.05
    with pytest.raises(CompressError, match="already quantized"):
        quantize(small, bits=4)
    with pytest.raises(CompressError, match="2 to 8"):
        quantize(cnn, bits=16)
