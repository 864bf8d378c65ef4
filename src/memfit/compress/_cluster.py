"""k-means weight sharing (Deep Compression, Han et al. 2016, section 3)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from memfit.compress._encode import encode_and_report
from memfit.compress._report import CompressReport
from memfit.compress._values import ClusteredValues
from memfit.errors import CompressError


def kmeans_1d(
    values: torch.Tensor, k: int, iterations: int = 50
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted centroids, assignment) of 1-D k-means with linear initialisation.

    Han et al. found linear initialisation (centroids spread evenly between the
    smallest and largest weight) keeps the rare large weights best. Hand-written
    because 1-D Lloyd is a bucketize and a scatter-mean; scikit-learn's KMeans
    is an optional extra and slower on millions of points.

    >>> centroids, assignment = kmeans_1d(torch.tensor([0.0, 0.1, 5.0, 5.2]), 2)
    >>> [round(c, 2) for c in centroids.tolist()], assignment.tolist()
    ([0.05, 5.1], [0, 0, 1, 1])
    """
    values = values.detach().reshape(-1).float()
    if values.numel() == 0:
        raise CompressError("cannot cluster an empty weight")
    k = min(k, values.numel())
    centroids = torch.linspace(float(values.min()), float(values.max()), k)
    for _ in range(iterations):
        assignment = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(k).index_add_(0, assignment, values)
        counts = torch.bincount(assignment, minlength=k)
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        # Means of consecutive intervals stay in order, so bucketize stays valid.
        if torch.allclose(updated, centroids, rtol=0, atol=1e-7):
            break
        centroids = updated
    assignment = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
    return centroids, assignment


def cluster(
    model: nn.Module,
    k: int = 16,
    *,
    skip: Iterable[str] = (),
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    finetune_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    finetune_steps: int = 0,
    inplace: bool = False,
) -> tuple[nn.Module, CompressReport]:
    """Share `k` values per layer: each Linear/Conv2d weight becomes a codebook of `k` fp32
    centroids plus one packed index per weight (4 bits for k=16). Pruned layers keep their
    sparsity and cluster only the kept weights. Codebooks are Parameters, so `finetune`
    trains the shared values as Deep Compression does.

    >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    >>> small, report = cluster(model, k=16)
    >>> report.ratio > 5
    True
    """
    if not isinstance(k, int) or not 2 <= k <= 256:
        raise CompressError(f"k (the number of shared values) must be from 2 to 256, got {k!r}")

    def encoder(values, entry_rows, rows):
        centroids, assignment = kmeans_1d(values, k)
        return ClusteredValues.encode(values, centroids, assignment)

    bits = max(1, (k - 1).bit_length())
    return encode_and_report(
        model,
        encoder,
        method=f"cluster k={k}",
        encoding=f"{k}-value codebook, {bits}-bit indices",
        tuned="the shared values training",
        skip=skip,
        validation=validation,
        finetune_data=finetune_data,
        finetune_steps=finetune_steps,
        inplace=inplace,
    )
