from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from memfit.compress import prune
from memfit.errors import CompressError
from memfit.measure.bytes import module_bytes


def test_structured_mlp_equals_the_model_with_those_neurons_silenced(mlp):
    small, report = prune(mlp, 0.5, structured=True, scope="layer")
    assert (
        small[0].out_features,
        small[2].in_features,
        small[2].out_features,
        small[4].in_features,
        small[4].out_features,
    ) == (32, 32, 32, 32, 10)
    # Which neurons survived: rows of the original first layer found in the new one.
    kept0 = [i for i in range(64) if any(torch.equal(mlp[0].weight[i], r) for r in small[0].weight)]
    kept2 = [
        i
        for i in range(64)
        if any(torch.equal(mlp[2].weight[i, kept0], r) for r in small[2].weight)
    ]
    silenced = copy.deepcopy(mlp)
    with torch.no_grad():
        for layer, kept in ((silenced[0], kept0), (silenced[2], kept2)):
            drop = [i for i in range(64) if i not in kept]
            layer.weight[drop] = 0
            layer.bias[drop] = 0
    x = torch.randn(4, 32)
    torch.testing.assert_close(small(x), silenced(x))
    assert report.after_bytes == module_bytes(small) < 0.4 * report.before_bytes


def test_structured_cnn_shrinks_batchnorm_and_the_head(cnn):
    small, report = prune(cnn, 0.5, structured=True, scope="layer")
    assert small[0].out_channels == 4 and small[1].num_features == 4
    assert small[3].in_channels == 4 and small[3].out_channels == 8
    assert small[4].num_features == 8 and small[8].in_features == 8
    assert small(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert any("BatchNorm" in note for note in report.notes)


def test_residual_add_blocks_the_layer_it_feeds():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(16, 16)
            self.middle = nn.Linear(16, 16)
            self.out = nn.Linear(16, 4)

        def forward(self, x):
            return self.out(self.middle(torch.relu(self.inner(x))) + x)

    small, report = prune(Residual(), 0.5, structured=True, scope="layer")
    assert small.inner.out_features == 8 and small.middle.in_features == 8
    assert small.middle.out_features == 16  # feeds the add
    assert any("middle" in note for note in report.notes)


def test_untraceable_model_gets_a_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else x

    with pytest.raises(CompressError, match="structured=False"):
        prune(Branchy(), 0.5, structured=True)
