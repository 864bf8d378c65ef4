"""`path/to/file.py:function` and `package.module:function` specs.

The function returns a `Workload`, or an `nn.Module` that becomes one with an
input shape (random inputs, a mean-square loss: the same backward memory as a
real loss over every output element).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from memfit.errors import WorkloadError
from memfit.specs._overrides import call_with_overrides, parse_overrides
from memfit.workload import Batch, Workload, first_tensor


def python_workload(spec: str, input_shape: tuple[int, ...] | None) -> Workload:
    target, override_text = _split_target(spec)
    factory = _import_function(target)
    overrides = parse_overrides(override_text)
    result = call_with_overrides(factory, overrides, target)
    if isinstance(result, Workload):
        return result
    if isinstance(result, nn.Module):
        if not input_shape:
            raise WorkloadError(
                f"{target} returned an nn.Module; give its input shape without the batch "
                "dimension, e.g. --input-shape 3,32,32, or return a memfit.Workload"
            )
        build = module_builder(lambda: factory(**overrides), first=result)
        return workload_from_module(build, tuple(input_shape), name=target)
    raise WorkloadError(
        f"{target} returned {type(result).__name__}; it must return a memfit.Workload or an nn.Module"
    )


def module_builder(
    factory: Callable[[], nn.Module], first: nn.Module | None = None
) -> Callable[[], nn.Module]:
    """A model factory over a function that returns a module, for real and fake builds.

    A real build calls the function again for fresh parameters (the module it returned
    while the spec was read is handed out once, so that build is not wasted). Under fake
    tensors the function runs again inside the fake mode, so its parameters are fake; a
    function that creates real tensors there (it loads a checkpoint, say) is run outside
    the fake mode once and its module's shapes are copied into fake tensors.
    """
    spare = [first] if first is not None else []

    def build() -> nn.Module:
        from torch._guards import detect_fake_mode

        mode = detect_fake_mode()
        if mode is None:
            return spare.pop() if spare else factory()
        try:
            return factory()
        except Exception as exc:
            if "FakeTensor" not in str(exc):
                raise
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        from memfit.estimator.fake_build import fake_copy

        with unset_fake_temporarily():
            real = spare[0] if spare else factory()
        return fake_copy(real, mode)

    return build


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


def _mean_square_loss(output: Any, _targets: Any) -> torch.Tensor:
    # A user module with no known target: any scalar that depends on every output
    # element gives the same backward memory as a real loss.
    return first_tensor(output).float().pow(2).mean()


def _split_target(spec: str) -> tuple[str, str]:
    # `path/file.py:function:overrides` or `pkg.mod:function:overrides`.
    parts = spec.split(":")
    if len(parts) < 2 or not parts[1]:
        raise WorkloadError(
            f"cannot read model {spec!r}: use zoo:NAME (see `memfit profile --help`), "
            "hf:NAME, timm:NAME, path/to/file.py:function or package.module:function"
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
