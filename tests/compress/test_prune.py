from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memfit.compress import CompressedConv2d, CompressedLinear, finetune, prune
from memfit.errors import CompressError
from memfit.measure.bytes import module_bytes


def _masked_reference(model: nn.Module, amount: float) -> nn.Module:
    """torch's own pruning: same global magnitude rule (per-layer std), dense weight + mask."""
    import copy

    import torch.nn.utils.prune as torch_prune

    ref = copy.deepcopy(model)
    layers = [m for m in ref.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    scaled = torch.cat([(m.weight.abs() / m.weight.std()).reshape(-1) for m in layers])
    threshold = scaled.kthvalue(round(amount * scaled.numel())).values
    for m in layers:
        torch_prune.custom_from_mask(m, "weight", m.weight.abs() / m.weight.std() > threshold)
    return ref


def test_sparse_prune_computes_what_the_masked_dense_model_computes(mlp):
    small, report = prune(mlp, 0.8)
    reference = _masked_reference(mlp, 0.8)
    x = torch.randn(5, 32)
    torch.testing.assert_close(small(x), reference(x), rtol=1e-5, atol=1e-5)
    assert all(
        isinstance(m, CompressedLinear) and m.sparse for m in small if not isinstance(m, nn.ReLU)
    )
    # torch.nn.utils.prune keeps the dense weight and adds a mask: it saves nothing.
    assert module_bytes(reference) >= module_bytes(mlp)
    assert report.after_bytes == module_bytes(small) < report.before_bytes / 2
    assert sum(lay.density * lay.before_bytes for lay in report.layers) > 0
    kept = sum(m.positions.nnz for m in small.modules() if isinstance(m, CompressedLinear))
    total = sum(m.weight.numel() for m in mlp.modules() if isinstance(m, nn.Linear))
    assert kept == pytest.approx(0.2 * total, abs=2)


def test_input_model_is_left_alone_unless_inplace(mlp):
    before = [p.clone() for p in mlp.parameters()]
    prune(mlp, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, mlp.parameters(), strict=True))
    same, _ = prune(mlp, 0.8, inplace=True)
    assert same is mlp and isinstance(mlp[0], CompressedLinear)


def test_low_sparsity_stays_dense_because_indices_would_cost_more(mlp):
    small, report = prune(mlp, 0.3, scope="layer")
    assert isinstance(small[0], nn.Linear)
    assert float((small[0].weight == 0).float().mean()) == pytest.approx(0.3, abs=0.01)
    assert report.after_bytes == report.before_bytes
    assert any("50%" in note for note in report.notes)
    packed, packed_report = prune(mlp, 0.3, index_bits=4, scope="layer")
    assert isinstance(packed[0], CompressedLinear)
    assert packed_report.after_bytes < packed_report.before_bytes


def test_sparse_conv_matches_masked_conv(cnn):
    small, _ = prune(cnn, 0.7, layout="sparse", index_bits=4)
    assert isinstance(small[3], CompressedConv2d) and small[3].sparse
    reference = _masked_reference(cnn, 0.7)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(small(x), reference(x), rtol=1e-5, atol=1e-5)


def test_finetuning_keeps_the_mask_fixed_and_learns(mlp):
    torch.manual_seed(1)
    x = torch.randn(256, 32)
    y = (x[:, :10]).argmax(1)
    small, _ = prune(mlp, 0.8)
    mask = small[2].positions.mask().clone()
    loss_before = F.cross_entropy(small(x), y).item()
    finetune(small, (x, y), steps=60, lr=3e-3)
    assert torch.equal(small[2].positions.mask(), mask)
    assert (small[2].dense_weight()[~mask] == 0).all()
    assert F.cross_entropy(small(x), y).item() < loss_before


def test_layer_scope_prunes_each_layer_by_amount(mlp):
    _, report = prune(mlp, 0.75, scope="layer")
    assert [round(layer.density, 2) for layer in report.layers] == [0.25, 0.25, 0.25]


def test_bad_arguments_are_refused_with_a_fix(mlp):
    with pytest.raises(CompressError, match=r"\[0, 1\)"):
        prune(mlp, 1.5)
    with pytest.raises(CompressError, match="scope"):
        prune(mlp, 0.5, scope="model")
    small, _ = prune(mlp, 0.8)
    with pytest.raises(CompressError, match="prune first"):
        prune(small, 0.5)
