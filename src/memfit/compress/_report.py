"""What a compression did: bytes held before and after (measured), accuracy before and after."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from memfit.measure.bytes import module_bytes


@dataclass
class LayerReport:
    """One layer's change. Bytes are those its own tensors hold (weight and bias)."""

    name: str
    kind: str
    """linear or conv2d"""
    before_bytes: int
    after_bytes: int
    encoding: str
    """How the weight is stored now, e.g. `sparse int32 CSR, fp32 values` or `4-bit codebook`."""
    density: float = 1.0
    """Fraction of the original weights still stored (1.0 when nothing was pruned)."""


@dataclass
class CompressReport:
    """Result of `prune`, `quantize`, `cluster` or `compress`.

    `before_bytes` / `after_bytes` are `module_bytes(model)`: every parameter and
    buffer storage the model holds, counted once (biases, BatchNorm and codebooks
    included), measured on the models themselves.
    """

    method: str
    before_bytes: int
    after_bytes: int
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    layers: list[LayerReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stages: list[CompressReport] = field(default_factory=list)
    """For the combined pipeline: one report per step, in order."""

    @property
    def ratio(self) -> float:
        """before_bytes / after_bytes (35.0 means 35x smaller)."""
        return self.before_bytes / max(self.after_bytes, 1)

    @property
    def accuracy_change(self) -> float | None:
        if self.accuracy_before is None or self.accuracy_after is None:
            return None
        return self.accuracy_after - self.accuracy_before

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ratio"] = round(self.ratio, 3)
        out["accuracy_change"] = self.accuracy_change
        out["stages"] = [s.to_dict() for s in self.stages]
        return out

    def __str__(self) -> str:
        text = (
            f"{self.method}: {self.before_bytes:,} -> {self.after_bytes:,} bytes "
            f"({self.ratio:.1f}x smaller)"
        )
        if self.accuracy_change is not None:
            text += (
                f", accuracy {self.accuracy_before:.2%} -> {self.accuracy_after:.2%} "
                f"({100 * self.accuracy_change:+.2f} points)"
            )
        return text


def layer_bytes(module: nn.Module) -> int:
    return module_bytes(module)


@torch.no_grad()
def accuracy(
    model: nn.Module, validation: tuple[torch.Tensor, torch.Tensor], batch_size: int = 512
) -> float:
    """Top-1 accuracy of a classifier on `(inputs, labels)`, in eval mode.

    >>> model = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.eye(2)); _ = model.bias.zero_()
    >>> accuracy(model, (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])))
    0.5
    """
    inputs, labels = validation
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for start in range(0, len(labels), batch_size):
            logits = model(inputs[start : start + batch_size])
            correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / max(len(labels), 1)


def maybe_accuracy(model: nn.Module, validation) -> float | None:
    return None if validation is None else accuracy(model, validation)
