"""Building a model on fake tensors: weight init made harmless, failures explained.

A model's constructor runs its weight init, and some init reads tensor values:
torch's `trunc_normal_` (used by Hugging Face ViT, timm, many vision models)
redraws samples until none falls outside its bounds, which asks the tensor
whether any does. Fake tensors hold no values, so that question stops the build.
Init values never change how much memory a step takes, so while a model is
built on fake tensors every `torch.nn.init` function returns its tensor as it
is (the same thing Hugging Face's own `no_init_weights` does before loading
weights).

    >>> import torch
    >>> from torch._subclasses.fake_tensor import FakeTensorMode
    >>> def vision_like():
    ...     layer = torch.nn.Linear(4, 4)
    ...     torch.nn.init.trunc_normal_(layer.weight, std=0.02)   # reads values
    ...     return layer
    >>> with FakeTensorMode(), harmless_init():
    ...     layer = vision_like()
    >>> tuple(layer.weight.shape)
    (4, 4)
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from memfit.errors import EstimateError, MemfitError

if TYPE_CHECKING:
    from memfit.workload import Workload

# The functions of torch.nn.init that fill a tensor in place (all of them return it).
_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


def _keep_as_is(tensor: torch.Tensor, *_args, **_kwargs) -> torch.Tensor:
    return tensor


@contextmanager
def harmless_init() -> Iterator[None]:
    """Make every `torch.nn.init` function a no-op for the duration (values are not memory).

    Modules that imported an init function by name (`from torch.nn.init import
    trunc_normal_`, as torch's own layers and many model files do) hold their own
    reference, so every loaded module's binding of the original function is swapped,
    and Hugging Face's table of the originals (which its guarded init calls) too.
    """
    originals = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    by_identity = {id(func): name for name, func in originals.items()}
    swapped: list[tuple[dict, str, object]] = []
    # A snapshot: importing inside the block must not change the dict being walked.
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            if id(value) in by_identity:
                swapped.append((namespace, key, value))
    hf_table = _hf_init_table()
    if hf_table is not None:
        for key, value in list(hf_table.items()):
            if key in originals:
                swapped.append((hf_table, key, value))
    try:
        for namespace, key, _value in swapped:
            namespace[key] = _keep_as_is
        yield
    finally:
        for namespace, key, value in swapped:
            namespace[key] = value


def _hf_init_table() -> dict | None:
    # transformers keeps the original torch init functions in a dict and calls them
    # from there; only look if transformers is already imported (never import it here).
    module = sys.modules.get("transformers.initialization")
    table = getattr(module, "TORCH_INIT_FUNCTIONS", None) if module else None
    return table if isinstance(table, dict) else None


def fake_safe(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Wrap a model factory so that, under an active fake mode, it builds with harmless init.

    Real builds are left alone: their init is the user's, values and all.
    """
    if getattr(build, "_memfit_fake_safe", False):
        return build

    def build_model() -> nn.Module:
        from torch._guards import detect_fake_mode

        if detect_fake_mode() is None:
            return build()
        with harmless_init():
            return build()

    build_model._memfit_fake_safe = True  # type: ignore[attr-defined]
    return build_model


def fake_copy(module: nn.Module, mode) -> nn.Module:
    """A copy of `module` whose parameters, buffers and tensor attributes are fake in `mode`.

    Only shapes, dtypes and devices are copied (no data), so copying a big model costs
    nothing; tied weights stay tied (one fake per real tensor).
    """
    import copy

    memo: dict[int, object] = {}
    for sub in module.modules():
        tensors = [*sub._parameters.values(), *sub._buffers.values()]
        tensors += [v for v in vars(sub).values() if isinstance(v, torch.Tensor)]
        for tensor in tensors:
            if tensor is None or id(tensor) in memo:
                continue
            fake = mode.from_tensor(tensor)
            if isinstance(tensor, nn.Parameter):
                fake = nn.Parameter(fake, tensor.requires_grad)
            memo[id(tensor)] = fake
    return copy.deepcopy(module, memo)


def build_fake_model(workload: Workload, device: str | torch.device) -> nn.Module:
    """Build `workload`'s model inside the active fake mode, on `device`, init made harmless.

    A build that still cannot run on fake tensors raises an EstimateError that names the
    operation and where in the model's code it was called.
    """
    try:
        with torch.device(device), harmless_init():
            return workload.build_model()
    except MemfitError:
        raise
    except Exception as exc:
        raise EstimateError(
            describe_fake_failure(exc, workload.name, "building the model")
        ) from exc


def describe_fake_failure(exc: BaseException, name: str, stage: str) -> str:
    """One line: what failed on fake tensors, in which stage, where in the model's code."""
    what = _operation(exc)
    where = _model_frame(exc)
    debug = "" if os.environ.get("MEMFIT_DEBUG") else " (MEMFIT_DEBUG=1 shows the traceback)"
    return (
        f"{name} cannot run on fake tensors: {what} failed while {stage}"
        f"{f' at {where}' if where else ''}; measure it with `memfit profile` at a small "
        f"batch size instead{debug}"
    )


def _operation(exc: BaseException) -> str:
    func = getattr(exc, "func", None)  # fake-tensor exceptions carry the aten operation
    if func is not None:
        op = str(func)
        if "_local_scalar_dense" in op or "item" in op:
            return f"{op} (it reads a tensor's value, which fake tensors do not have)"
        return op
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}{f': {text}' if text else ''}"


def _model_frame(exc: BaseException) -> str:
    """The innermost frame outside torch itself: the model code that asked for the value."""
    frames = traceback.extract_tb(exc.__traceback__)
    torch_dir = os.path.dirname(torch.__file__)
    here = os.path.dirname(__file__)
    for frame in reversed(frames):
        if frame.filename.startswith((torch_dir, here)) or "contextlib" in frame.filename:
            continue
        short = frame.filename.split("site-packages" + os.sep)[-1]
        return f"{short}:{frame.lineno} in {frame.name}"
    return ""
