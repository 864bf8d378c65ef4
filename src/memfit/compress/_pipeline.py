"""Deep Compression's pipeline: prune, fine-tune, then share or quantize the kept weights."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import torch
from torch import nn

from memfit.compress._cluster import cluster
from memfit.compress._prune import prune
from memfit.compress._quantize import quantize
from memfit.compress._report import CompressReport, maybe_accuracy
from memfit.compress._targets import working_copy
from memfit.compress._training import tune_after_compression
from memfit.measure.bytes import module_bytes


def compress(
    model: nn.Module,
    amount: float = 0.8,
    *,
    k: int | None = 16,
    bits: int | None = None,
    index_bits: int | None = 4,
    structured: bool = False,
    scope: str = "global",
    skip: Iterable[str] = (),
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    finetune_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    finetune_steps: int = 0,
    inplace: bool = False,
) -> tuple[nn.Module, CompressReport]:
    """Prune `amount` of the weights, then cluster the rest into `k` shared values (or,
    with `bits`, quantize them), as Deep Compression (Han et al. 2016) does; Huffman
    coding, its third step, is left out (it saves file bytes, not memory a layer can
    compute from). Unstructured pruning stores positions as `index_bits`-bit gaps.
    With `finetune_data`, each step is followed by BatchNorm recalibration and
    `finetune_steps` of fine-tuning (mask fixed; after clustering, the shared
    centroids train, after quantizing only biases and BatchNorm do).

    >>> model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    >>> small, report = compress(model, amount=0.9, k=16)
    >>> [s.method for s in report.stages]
    ['prune', 'cluster k=16']
    >>> report.ratio > 15
    True
    """
    model = working_copy(model, inplace)
    tune = {"finetune_data": finetune_data, "finetune_steps": finetune_steps}
    model, pruned = prune(
        model,
        amount,
        structured=structured,
        scope=scope,
        index_bits=None if structured else index_bits,
        skip=skip,
        validation=validation,
        inplace=True,
        **tune,
    )
    if bits is not None:
        model, shared = quantize(model, bits, skip=skip, validation=None, inplace=True)
    else:
        model, shared = cluster(model, k or 16, skip=skip, validation=None, inplace=True)
    shared.notes += tune_after_compression(
        model, finetune_data, finetune_steps, "the shared values training"
    )
    shared.accuracy_before = pruned.accuracy_after
    shared.after_bytes = module_bytes(model)
    shared.accuracy_after = maybe_accuracy(model, validation)
    # Per layer: bytes before pruning, after both steps.
    original = {layer.name: layer.before_bytes for layer in pruned.layers}
    layers = [
        replace(layer, before_bytes=original.get(layer.name, layer.before_bytes))
        for layer in shared.layers
    ]
    return model, CompressReport(
        method=f"{pruned.method} + {shared.method}",
        before_bytes=pruned.before_bytes,
        after_bytes=shared.after_bytes,
        accuracy_before=pruned.accuracy_before,
        accuracy_after=shared.accuracy_after,
        layers=layers,
        notes=pruned.notes + shared.notes,
        stages=[pruned, shared],
    )
