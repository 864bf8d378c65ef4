"""Workload: everything needed to run one training step.

Model specs that name one (`zoo:mlp`, `hf:gpt2`, `file.py:function`...) are resolved
by `memfit.specs`; a Workload itself knows nothing of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memfit.errors import WorkloadError

Batch = Any
"""`(inputs, targets)`, or a dict of keyword inputs alone (targets inside, such as `labels`).

inputs is a tensor, a tuple of tensors (positional) or a dict (keyword)."""


@dataclass(kw_only=True)
class Workload:
    """One training step's ingredients: model, batch maker, loss (and optionally the optimizer)."""

    name: str
    build_model: Callable[[], nn.Module]
    """Builds the model with fresh parameters on the current default device."""
    make_batch: Callable[[int, torch.device | str], Batch]
    """`make_batch(batch_size, device) -> batch` with realistic shapes (see `Batch`)."""
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None
    """`loss_fn(model_output, targets) -> scalar`; None when the model computes its loss
    itself (its output carries `.loss`, as Hugging Face models do when given labels)."""
    count_items: Callable[[Batch], int] | None = None
    """How many items the loss averages over in a batch (for a token-level loss, the
    tokens whose label is not ignored). Micro-batches are weighted by it, so that the
    accumulated gradient is the full batch's. None: the samples along dim 0."""
    build_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None
    """The workload's own optimizer (its parameter groups, its hyper-parameters); None:
    the optimizer named by the caller (`optimizer="adam"`...)."""
    clip_grad_norm: float | None = None
    """Clip the gradients' total norm (over every parameter the optimizer updates) to this
    before each optimizer step (`torch.nn.utils.clip_grad_norm_`); None: no clipping."""
    default_batch_size: int = 32
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    """The settings the model was built with (after overrides)."""
    load_data: Callable[[], tuple[torch.Tensor, ...]] | None = None
    """Real data when the workload has some: `() -> (x_train, y_train, x_test, y_test)`."""

    def forward(self, model: nn.Module, inputs: Any) -> Any:
        return call_model(model, inputs)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        inputs, targets = split_inputs(batch)
        output = call_model(model, inputs)
        if self.loss_fn is None:
            return loss_of_output(output, self.name)
        return self.loss_fn(output, targets)


def split_inputs(batch: Batch) -> tuple[Any, Any]:
    """`(inputs, targets)` of a batch; a dict alone is keyword inputs with no targets."""
    if isinstance(batch, dict):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise WorkloadError(
        f"a batch is (inputs, targets) or a dict of model inputs; got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    )


def loss_of_output(output: Any, name: str = "the model") -> torch.Tensor:
    """The loss a model computed itself: `output.loss`, or `output["loss"]`."""
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, dict):
        loss = output.get("loss")
    if not isinstance(loss, torch.Tensor):
        raise WorkloadError(
            f"{name} returned no loss (no `.loss` in its output): give the Workload a "
            "loss_fn, or put the targets in the batch (for example `labels`)"
        )
    return loss


def call_model(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def first_tensor(output: Any) -> torch.Tensor:
    """The first tensor in a model output that may be a tensor, tuple, list or dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        values: Iterable[Any] = output.values()
    elif isinstance(output, (tuple, list)):
        values = output
    else:
        values = vars(output).values() if hasattr(output, "__dict__") else ()
    for value in values:
        try:
            return first_tensor(value)
        except WorkloadError:
            continue
    raise WorkloadError(f"the model returned {type(output).__name__} with no tensor in it")


def load_workload(spec: str | Workload, input_shape: tuple[int, ...] | None = None) -> Workload:
    """Resolve a model spec (`zoo:`, `hf:`, `timm:`, `file.py:fn`, `pkg.mod:fn`) to a Workload.

    The specs live in `memfit.specs`; this name stays here because a Workload is what
    they resolve to.
    """
    from memfit.specs import load_workload as resolve

    return resolve(spec, input_shape)
