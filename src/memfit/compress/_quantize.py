"""Weight-only per-channel quantization that dequantizes on the fly.

Written here rather than taken from `torch.ao.quantization.quantize_dynamic`:
that one covers Linear but not Conv2d, quantizes activations too, and hides its
weights in packed script objects that neither `module_bytes` nor safetensors can
see. torchao's weight-only configs cover Linear only and produce tensor
subclasses that safetensors cannot store. Where torch's own kernel does the job
(`torch._weight_int8pack_mm`, int8 Linear at inference), the layer uses it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from memfit.compress._encode import encode_layers
from memfit.compress._report import CompressReport, maybe_accuracy
from memfit.compress._targets import working_copy
from memfit.compress._training import tune_after_compression
from memfit.compress._values import QuantizedValues
from memfit.errors import CompressError
from memfit.measure.bytes import module_bytes


def quantize(
    model: nn.Module,
    bits: int = 8,
    *,
    skip: Iterable[str] = (),
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    finetune_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    finetune_steps: int = 0,
    inplace: bool = False,
) -> tuple[nn.Module, CompressReport]:
    """Store every Linear/Conv2d weight as `bits`-bit integers with one fp32 scale per
    output channel (symmetric, so pruned zeros stay zero). 8 bits are int8; 4 bits are
    packed two to a byte. Pruned (sparse) layers keep their sparsity.

    >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    >>> small, report = quantize(model, bits=4)
    >>> round(report.ratio, 1)
    6.5
    """
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise CompressError(
            f"bits must be an integer from 2 to 8 (8 and 4 are usual), got {bits!r}"
        )
    accuracy_before = maybe_accuracy(model, validation)
    before = module_bytes(model)
    model = working_copy(model, inplace)

    def encoder(values, entry_rows, rows):
        return QuantizedValues.encode(values, entry_rows, rows, bits)

    layers = encode_layers(model, encoder, f"int{bits} per-channel", skip)
    notes = ["biases and BatchNorm stay fp32"]
    notes += tune_after_compression(
        model, finetune_data, finetune_steps, "biases and BatchNorm training"
    )
    return model, CompressReport(
        method=f"quantize int{bits}",
        before_bytes=before,
        after_bytes=module_bytes(model),
        accuracy_before=accuracy_before,
        accuracy_after=maybe_accuracy(model, validation),
        layers=layers,
        notes=notes,
    )
