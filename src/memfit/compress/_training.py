"""Short training for compressed models: brief fits before compressing, fine-tuning after."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from memfit import progress
from memfit.errors import CompressError


def finetune(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    steps: int = 200,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """Train a classifier for `steps` Adam steps on `(inputs, labels)`, keeping pruned weights at 0.

    Sparse compressed layers store only their kept weights, so their mask cannot
    change. Plain Linear/Conv2d weights that are exactly zero (pruned but kept
    dense) are zeroed again after every step, so their mask stays fixed as well.

    >>> torch.manual_seed(0) and None
    >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
    >>> model = nn.Linear(4, 2)
    >>> with torch.no_grad():
    ...     _ = model.weight[:, 3].zero_()
    >>> _ = finetune(model, (x, y), steps=50, lr=0.05)
    >>> bool((model.weight[:, 3] == 0).all())
    True
    """
    inputs, labels = data
    if steps < 0:
        raise CompressError(f"steps must be 0 or more, got {steps}")
    if len(labels) == 0:
        raise CompressError("fine-tuning needs at least one labelled example")
    masks = _zero_masks(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable or steps == 0:
        return model
    optimizer = torch.optim.Adam(trainable, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.train()
    with progress.task(f"training {steps} steps", total=steps) as bar:
        for _ in range(steps):
            idx = torch.randint(
                0, len(labels), (min(batch_size, len(labels)),), generator=generator
            )
            loss = F.cross_entropy(model(inputs[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for weight, keep in masks:
                    weight.mul_(keep)
            bar.advance()
    model.train(was_training)
    return model


def _zero_masks(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    masks = []
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.weight.requires_grad:
            keep = module.weight.detach() != 0
            if not bool(keep.all()):
                masks.append((module.weight, keep))
    return masks


def workload_data(workload) -> tuple[torch.Tensor, ...] | None:
    """`(x_train, y_train, x_test, y_test)` for a workload that has real data, else None.

    The zoo MLP built for digits (`inputs=64, classes=10`) has no loader of its own;
    it gets scikit-learn's digits flattened to 64 features.
    """
    if workload.load_data is not None:
        return workload.load_data()
    config = workload.config
    if workload.name == "mlp" and config.get("inputs") == 64 and config.get("classes") == 10:
        from memfit.zoo.digits import load_digits_tensors

        return load_digits_tensors(images=False)
    return None


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> bool:
    """Re-estimate every BatchNorm's running statistics on `inputs` (no gradient step).

    Pruning or rounding weights shifts the activations a BatchNorm normalizes, and its
    stale running statistics can cost far more accuracy than the compression itself
    (digits CNN, 70% pruned: 11% accuracy with the old statistics, 93% with new ones).
    Returns whether the model had a BatchNorm.
    """
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return False
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the batches below
    model.train()
    try:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start : start + batch_size])
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(was_training)
    return True


def tune_after_compression(
    model: nn.Module, data: tuple[torch.Tensor, torch.Tensor] | None, steps: int, what: str
) -> list[str]:
    """Recalibrate BatchNorm, then fine-tune, when training data is given; returns notes."""
    if data is None:
        return []
    notes = []
    if recalibrate_batchnorm(model, data[0]):
        notes.append("BatchNorm statistics re-estimated on the training inputs")
    if steps:
        finetune(model, data, steps=steps)
        notes.append(f"fine-tuned {steps} steps with {what}")
    return notes
