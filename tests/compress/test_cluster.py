from __future__ import annotations

import pytest
import torch

from memfit.compress import cluster, finetune, kmeans_1d, prune
from memfit.errors import CompressError


def test_kmeans_finds_separated_groups():
    torch.manual_seed(0)
    values = torch.cat([torch.randn(500) * 0.01 + c for c in (-1.0, 0.0, 2.0)])
    centroids, assignment = kmeans_1d(values, 3)
    torch.testing.assert_close(centroids, torch.tensor([-1.0, 0.0, 2.0]), atol=0.01, rtol=0)
    assert torch.equal(assignment, torch.arange(3).repeat_interleave(500))


def test_each_layer_shares_at_most_k_values_in_four_bits(mlp):
    small, report = cluster(mlp, k=16)
    for layer in (small[0], small[2], small[4]):
        assert layer.dense_weight().unique().numel() <= 16
        assert layer.values.codes.numel() == (layer.rows * layer.cols + 1) // 2
    weights = 32 * 64 + 64 * 64 + 64 * 10
    assert report.after_bytes == weights // 2 + 3 * 16 * 4 + 4 * (64 + 64 + 10)


def test_clustering_a_pruned_layer_keeps_zeros_out_of_the_codebook(mlp):
    pruned, _ = prune(mlp, 0.9)
    small, _ = cluster(pruned, k=4)
    layer = small[2]
    assert layer.values.codebook.numel() == 4
    assert layer.values.codes.numel() == (layer.positions.nnz * 2 + 7) // 8
    assert torch.equal(layer.dense_weight() == 0, pruned[2].dense_weight() == 0)


def test_finetuning_moves_shared_centroids_not_assignments(mlp):
    small, _ = cluster(mlp, k=8)
    codes = small[2].values.codes.clone()
    codebook = small[2].values.codebook.detach().clone()
    x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
    finetune(small, (x, y), steps=5, lr=1e-2)
    assert torch.equal(small[2].values.codes, codes)
    assert not torch.equal(small[2].values.codebook.detach(), codebook)
    assert small[2].dense_weight().unique().numel() <= 8


def test_bad_k_is_refused(mlp):
    with pytest.raises(CompressError, match="2 to 256"):
        cluster(mlp, k=1000)
