"""Run one compression on a working copy and report what it changed, measured."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from memfit import progress
from memfit.compress._report import CompressReport, LayerReport, maybe_accuracy
from memfit.compress._targets import working_copy
from memfit.compress._training import tune_after_compression
from memfit.measure.bytes import module_bytes

Change = Callable[[nn.Module], tuple[list[LayerReport], list[str]]]
"""Changes the model in place; returns its per-layer reports and notes."""


def measured_compression(
    model: nn.Module,
    change: Change,
    *,
    method: str,
    tuned: str,
    validation,
    finetune_data,
    finetune_steps: int,
    inplace: bool,
) -> tuple[nn.Module, CompressReport]:
    """Bytes and accuracy before, `change`, optional fine-tuning, bytes and accuracy after.

    Every method (prune, quantize, cluster) goes through here, so their reports are
    measured the same way: bytes actually held (`module_bytes`), not computed.
    """
    with progress.task(f"compress: {method}"):
        accuracy_before = maybe_accuracy(model, validation)
        before = module_bytes(model)
        model = working_copy(model, inplace)
        layers, notes = change(model)
        notes = notes + tune_after_compression(model, finetune_data, finetune_steps, tuned)
    return model, CompressReport(
        method=method,
        before_bytes=before,
        after_bytes=module_bytes(model),
        accuracy_before=accuracy_before,
        accuracy_after=maybe_accuracy(model, validation),
        layers=layers,
        notes=notes,
    )
