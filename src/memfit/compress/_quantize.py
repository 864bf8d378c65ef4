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

from memfit.compress._encode import encode_and_report
from memfit.compress._report import CompressReport
from memfit.compress._values import QuantizedValues
from memfit.errors import CompressError


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

    def encoder(values, entry_rows, rows):
        return QuantizedValues.encode(values, entry_rows, rows, bits)

    return encode_and_report(
        model,
        encoder,
        method=f"quantize int{bits}",
        encoding=f"int{bits} per-channel",
        tuned="biases and BatchNorm training",
        skip=skip,
        validation=validation,
        finetune_data=finetune_data,
        finetune_steps=finetune_steps,
        inplace=inplace,
    )
