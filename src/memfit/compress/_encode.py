"""Re-encode the values of Linear/Conv2d layers (quantize, cluster), pruned or not."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from memfit import progress
from memfit.compress._layers import CompressedConv2d, CompressedLayer, CompressedLinear
from memfit.compress._report import LayerReport, layer_bytes
from memfit.compress._targets import set_module, target_layers
from memfit.compress._values import FloatValues
from memfit.errors import CompressError

Encoder = Callable[[torch.Tensor, torch.Tensor, int], nn.Module]
"""(values, entry_rows, rows) -> a value store."""


def encode_layers(
    model: nn.Module, encoder: Encoder, encoding: str, skip: Iterable[str]
) -> list[LayerReport]:
    """Replace every target layer's values by `encoder(values, rows of values, row count)`."""
    reports = []
    targets = target_layers(model, skip)
    with progress.task(f"{encoding}: layers", total=len(targets)) as bar:
        for name, module in targets:
            reports.append(_encode_layer(model, name, module, encoder, encoding))
            bar.advance()
    return reports


def _encode_layer(
    model: nn.Module, name: str, module: nn.Module, encoder: Encoder, encoding: str
) -> LayerReport:
    before = layer_bytes(module)
    if isinstance(module, CompressedLayer):
        if not isinstance(module.values, FloatValues):
            raise CompressError(
                f"layer {name} is already {module.values.kind}; quantize or cluster a model once"
            )
        positions = module.positions
        values = module.values.values.detach()
        rows = module.rows
        entry_rows = (
            positions.entry_rows()
            if positions is not None
            else torch.arange(rows).repeat_interleave(module.cols)
        )
        module.values = encoder(values, entry_rows, rows)
        new = module
        density = 1.0 if positions is None else positions.nnz / (rows * module.cols)
    else:
        weight = module.weight.detach()
        rows, cols = weight.shape[0], weight[0].numel()
        values = encoder(weight.reshape(-1), torch.arange(rows).repeat_interleave(cols), rows)
        if isinstance(module, nn.Linear):
            new = CompressedLinear(
                module.in_features, module.out_features, values, None, module.bias
            )
        else:
            new = CompressedConv2d.like(module, values)
        new.train(module.training)
        set_module(model, name, new)
        positions, density = None, 1.0
    prefix = "dense" if positions is None else "sparse"
    return LayerReport(
        name,
        "conv2d" if isinstance(new, CompressedConv2d) else "linear",
        before,
        layer_bytes(new),
        f"{prefix}, {encoding}",
        density,
    )


def encode_and_report(
    model: nn.Module,
    encoder: Encoder,
    *,
    method: str,
    encoding: str,
    tuned: str,
    skip: Iterable[str],
    validation,
    finetune_data,
    finetune_steps: int,
    inplace: bool,
):
    """Re-encode `model`'s layers, optionally fine-tune, and measure bytes and accuracy.

    Shared by `quantize` and `cluster`: they differ only in the encoder and the words.
    """
    from memfit.compress._measured import measured_compression

    def change(target: nn.Module):
        return encode_layers(target, encoder, encoding, skip), ["biases and BatchNorm stay fp32"]

    return measured_compression(
        model,
        change,
        method=method,
        tuned=tuned,
        validation=validation,
        finetune_data=finetune_data,
        finetune_steps=finetune_steps,
        inplace=inplace,
    )
