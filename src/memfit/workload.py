"""Workload: everything needed to run one training step, and model specs that name one.

A model spec is `zoo:NAME[:key=value,...]`, `path/to/file.py:function[:key=value,...]` or
`package.module:function[:key=value,...]`. The function returns a `Workload`, or an
`nn.Module` that is turned into one with `input_shape`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
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


def _mean_square_loss(output: Any, _targets: Any) -> torch.Tensor:
    # A user module with no known target: any scalar that depends on every output
    # element gives the same backward memory as a real loss.
    return first_tensor(output).float().pow(2).mean()


def workload_from_module(
    build: Callable[[], nn.Module], input_shape: tuple[int, ...], name: str, dtype=torch.float32
) -> Workload:
    """Wrap a bare module factory: random inputs of `(batch, *input_shape)`."""

    def make_batch(batch_size: int, device: torch.device | str = "cpu") -> Batch:
        x = torch.randn(batch_size, *input_shape, device=device, dtype=dtype)
        return x, None

    return Workload(
        name=name,
        build_model=build,
        make_batch=make_batch,
        loss_fn=_mean_square_loss,
        description=f"user module with input shape {tuple(input_shape)}",
        config={"input_shape": list(input_shape)},
    )


def parse_overrides(text: str) -> dict[str, Any]:
    """`depth=32,width=2048,act=gelu` -> {'depth': 32, 'width': 2048, 'act': 'gelu'}."""
    overrides: dict[str, Any] = {}
    if not text:
        return overrides
    for item in text.split(","):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise WorkloadError(f"cannot read override {item!r}: write key=value, comma separated")
        overrides[key.strip().replace("-", "_")] = _parse_value(raw.strip())
    return overrides


def _parse_value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def call_with_overrides(factory: Callable[..., Any], overrides: dict[str, Any], what: str) -> Any:
    """Call `factory(**overrides)`, refusing unknown keys with the list of valid ones."""
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in overrides if k not in params]
    if unknown and not takes_any:
        valid = (
            ", ".join(
                f"{n}={p.default!r}"
                for n, p in params.items()
                if p.default is not inspect.Parameter.empty
            )
            or "none"
        )
        raise WorkloadError(f"{what} has no setting {', '.join(unknown)}; valid settings: {valid}")
    try:
        return factory(**overrides)
    except (TypeError, ValueError) as exc:
        raise WorkloadError(f"{what} cannot be built with {overrides}: {exc}") from exc


def load_workload(spec: str | Workload, input_shape: tuple[int, ...] | None = None) -> Workload:
    """Resolve a model spec (see the module docstring) to a Workload."""
    if isinstance(spec, Workload):
        return spec
    if spec.startswith("zoo:"):
        from memfit import zoo

        name, _, override_text = spec[4:].partition(":")
        return zoo.get(name, **parse_overrides(override_text))
    target, override_text = _split_target(spec)
    factory = _import_function(target)
    result = call_with_overrides(factory, parse_overrides(override_text), target)
    if isinstance(result, Workload):
        return result
    if isinstance(result, nn.Module):
        if not input_shape:
            raise WorkloadError(
                f"{target} returned an nn.Module; give its input shape without the batch "
                "dimension, e.g. --input-shape 3,32,32, or return a memfit.Workload"
            )
        module = result
        return workload_from_module(lambda: module, tuple(input_shape), name=target)
    raise WorkloadError(
        f"{target} returned {type(result).__name__}; it must return a memfit.Workload or an nn.Module"
    )


def _split_target(spec: str) -> tuple[str, str]:
    # `path/file.py:function:overrides` or `pkg.mod:function:overrides`.
    parts = spec.split(":")
    if len(parts) < 2 or not parts[1]:
        raise WorkloadError(
            f"cannot read model {spec!r}: use zoo:NAME (see `memfit profile --help`), "
            "path/to/file.py:function or package.module:function"
        )
    return f"{parts[0]}:{parts[1]}", ":".join(parts[2:])


def _import_function(target: str) -> Callable[..., Any]:
    location, _, func_name = target.rpartition(":")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise WorkloadError(f"model file {location} does not exist")
        module_name = f"_memfit_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            raise WorkloadError(
                f"importing {location} failed: {type(exc).__name__}: {exc}"
            ) from exc
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise WorkloadError(f"cannot import module {location}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise WorkloadError(f"{location} has no function {func_name}")
    return func
