"""Which layers compression touches, and swapping a layer for its compressed form."""

from __future__ import annotations

import copy
from collections.abc import Iterable

from torch import nn

from memfit.compress._layers import CompressedLayer
from memfit.errors import CompressError


def is_target(module: nn.Module) -> bool:
    """Linear and Conv2d layers (zero padding only: the compressed conv pads with zeros)."""
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros"
    return isinstance(module, (nn.Linear, CompressedLayer))


def target_layers(model: nn.Module, skip: Iterable[str] = ()) -> list[tuple[str, nn.Module]]:
    """(qualified name, layer) of every layer to compress, minus those named in `skip`.

    A name in `skip` also skips everything inside it (`skip=["head"]`).
    """
    skip = check_skip(model, skip)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if is_target(module) and not any(name == s or name.startswith(s + ".") for s in skip)
    ]
    if not found:
        raise CompressError(
            "the model has no Linear or Conv2d layer to compress (or every one is listed in skip)"
        )
    return found


def check_skip(model: nn.Module, skip: Iterable[str]) -> tuple[str, ...]:
    """`skip` as a tuple, once every name in it is a module of `model` (a typo skips nothing)."""
    import difflib

    skip = tuple(skip)
    names = [name for name, _ in model.named_modules() if name]
    known = set(names)
    for name in skip:
        if name not in known:
            close = difflib.get_close_matches(name, names, n=3)
            hint = (
                f"did you mean {', '.join(close)}?" if close else f"layers: {', '.join(names[:8])}"
            )
            raise CompressError(
                f"cannot skip {name!r}: the model has no module of that name; {hint}"
            )
    return skip


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def working_copy(model: nn.Module, inplace: bool) -> nn.Module:
    """The model to change: itself when `inplace`, else a deep copy (the input stays usable)."""
    return model if inplace else copy.deepcopy(model)


def check_fraction(amount: float, what: str = "amount") -> float:
    if not isinstance(amount, (int, float)) or not 0.0 <= amount < 1.0:
        raise CompressError(
            f"{what} is the fraction to remove: give a number in [0, 1), got {amount!r}"
        )
    return float(amount)
