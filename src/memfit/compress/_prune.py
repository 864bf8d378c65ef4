"""Magnitude pruning whose result holds less memory (unlike `torch.nn.utils.prune`,
which keeps the dense weight and adds a mask of the same size)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from memfit.compress._layers import (
    CompressedConv2d,
    CompressedLayer,
    CompressedLinear,
    can_be_sparse,
)
from memfit.compress._measured import measured_compression
from memfit.compress._positions import SparsePositions
from memfit.compress._report import CompressReport, LayerReport, layer_bytes
from memfit.compress._targets import check_fraction, set_module, target_layers
from memfit.compress._values import FloatValues
from memfit.errors import CompressError
from memfit.measure.bytes import tensors_bytes

SCOPES = ("global", "layer")
LAYOUTS = ("auto", "sparse", "dense")


def prune(
    model: nn.Module,
    amount: float,
    *,
    structured: bool = False,
    scope: str = "global",
    layout: str = "auto",
    index_bits: int | None = None,
    skip: Iterable[str] = (),
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    finetune_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    finetune_steps: int = 0,
    inplace: bool = False,
) -> tuple[nn.Module, CompressReport]:
    """Remove the smallest-magnitude weights (or channels) so the model holds less memory.

    - `amount`: fraction of weights (unstructured) or of output channels
      (structured) to remove, in [0, 1).
    - `structured=False`: every Linear/Conv2d weight keeps its largest `1 - amount`
      entries, stored sparse (CSR) and computed with `torch.sparse.mm`. With
      `layout="auto"` a layer goes sparse only where that is smaller than dense:
      with int32 indices, above 50% sparsity. `index_bits=4..8` packs the indices
      as gaps (Deep Compression), which pays off from much lower sparsity.
    - `structured=True`: whole output channels / neurons go, layers are rebuilt
      smaller, and the next layer's inputs and any BatchNorm in between shrink
      with them. The model gets smaller and faster to train, with no sparse kernel.
    - `scope="global"` ranks all layers together, `"layer"` prunes each by `amount`.
    - `finetune_data=(x, y)`: BatchNorm statistics are re-estimated on `x`, then
      `finetune_steps` of fine-tuning follow with the mask kept fixed.
    - The input model is left as it was unless `inplace=True` (which saves a copy).

    >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    >>> small, report = prune(model, 0.9)
    >>> report.after_bytes < report.before_bytes / 4
    True
    """
    check_fraction(amount)
    if scope not in SCOPES:
        raise CompressError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if layout not in LAYOUTS:
        raise CompressError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")

    def change(target: nn.Module):
        if structured:
            from memfit.compress._structured import prune_channels

            return prune_channels(target, amount, scope, skip)
        return _prune_weights(target, amount, scope, layout, index_bits, skip)

    return measured_compression(
        model,
        change,
        method="prune (structured)" if structured else "prune",
        tuned="the pruning mask fixed",
        validation=validation,
        finetune_data=finetune_data,
        finetune_steps=finetune_steps,
        inplace=inplace,
    )


def _prune_weights(
    model: nn.Module,
    amount: float,
    scope: str,
    layout: str,
    index_bits: int | None,
    skip: Iterable[str],
):
    targets = target_layers(model, skip)
    for name, module in targets:
        if isinstance(module, CompressedLayer):
            raise CompressError(
                f"layer {name} is already compressed; prune first, then quantize or cluster"
            )
    magnitudes = [_relative_magnitude(m.weight.detach(), scope) for _, m in targets]
    thresholds = _thresholds(magnitudes, amount, scope)
    layers: list[LayerReport] = []
    kept_dense = []
    for (name, module), magnitude, threshold in zip(targets, magnitudes, thresholds, strict=True):
        before = layer_bytes(module)
        weight = module.weight.detach()
        keep = magnitude > threshold
        density = float(keep.float().mean())
        matrix_keep = keep.reshape(weight.shape[0], -1)
        positions = SparsePositions.from_mask(matrix_keep, index_bits)
        sparse_bytes = tensors_bytes(positions.buffers()) + int(keep.sum()) * weight.element_size()
        go_sparse = can_be_sparse(module) and (
            layout == "sparse" or (layout == "auto" and sparse_bytes < tensors_bytes([weight]))
        )
        if go_sparse:
            values = FloatValues(weight.reshape(matrix_keep.shape)[matrix_keep])
            new = (
                CompressedLinear(
                    module.in_features, module.out_features, values, positions, module.bias
                )
                if isinstance(module, nn.Linear)
                else CompressedConv2d.like(module, values, positions)
            )
            set_module(model, name, new)
            encoding = (
                f"sparse {'int32 CSR' if index_bits is None else f'{index_bits}-bit gaps'}"
                ", fp32 values"
            )
        else:
            with torch.no_grad():
                module.weight.mul_(keep)
            new = module
            encoding = "dense fp32 with zeros"
            kept_dense.append(name)
        layers.append(LayerReport(name, _kind(module), before, layer_bytes(new), encoding, density))
    notes = []
    if kept_dense:
        notes.append(
            f"kept dense (zeros stored, no memory saved): {', '.join(kept_dense)}; a sparse "
            "layout holds index bytes per kept weight and is only smaller above about 50% "
            "sparsity with int32 indices (pass index_bits=8 or 4 to pack them)"
        )
    return layers, notes


def _relative_magnitude(weight: torch.Tensor, scope: str) -> torch.Tensor:
    """|w|, divided by the layer's standard deviation when layers are ranked together.

    A BatchNorm after a conv makes the conv's scale arbitrary, so raw magnitudes of
    different layers do not compare; a threshold in units of each layer's std is
    Deep Compression's rule (Han et al. 2015, "Learning both weights and connections").
    """
    magnitude = weight.abs()
    if scope == "global" and weight.numel() > 1:
        magnitude = magnitude / weight.std().clamp_min(1e-12)
    return magnitude


def _thresholds(magnitudes: list[torch.Tensor], amount: float, scope: str) -> list[float]:
    """Per layer, the magnitude at or below which weights are removed."""

    def kth(values: torch.Tensor) -> float:
        count = int(round(amount * values.numel()))
        return float(torch.kthvalue(values.reshape(-1), count).values) if count else -1.0

    if scope == "layer":
        return [kth(m) for m in magnitudes]
    return [kth(torch.cat([m.reshape(-1) for m in magnitudes]))] * len(magnitudes)


def _kind(module: nn.Module) -> str:
    return "conv2d" if isinstance(module, (nn.Conv2d, CompressedConv2d)) else "linear"
