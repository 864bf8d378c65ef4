"""Save and load compressed models with safetensors: tensors plus a JSON description,
never a pickle, so loading a file runs no code from it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from memfit.compress._layers import LAYER_TYPES, CompressedLayer
from memfit.compress._targets import set_module
from memfit.errors import CompressError, require

_KEY = "memfit.compress"
_FORMAT = 1


def save(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write `model`'s tensors and the layout of its compressed layers to a safetensors file.

    The file is written beside `path` under a temporary name and renamed when complete,
    so a failure never leaves a half-written file at `path`.
    """
    st = require("safetensors.torch", "compress")
    path = Path(path)
    layers = {name: m.spec() for name, m in model.named_modules() if isinstance(m, CompressedLayer)}
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {_KEY: json.dumps({"format": _FORMAT, "layers": layers})}
    fd, tmp = tempfile.mkstemp(
        dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp"
    )
    os.close(fd)
    try:
        st.save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, RuntimeError) and "share memory" in str(exc):
            raise CompressError("the model has tied weights; untie them before saving") from exc
        raise
    return path


def load(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load a file written by `save` into `model`, a freshly built model of the same
    architecture: its layers are replaced by the saved compressed ones and layers that
    structured pruning made smaller are rebuilt at their saved size. Returns `model`.

    >>> import tempfile, pathlib
    >>> from memfit.compress import quantize
    >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> small, _ = quantize(net, bits=4)
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "net.safetensors"
    >>> _ = save(small, file)
    >>> back = load(file, nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)))
    >>> x = torch.randn(3, 8)
    >>> bool(torch.equal(back(x), small(x)))
    True
    """
    st = require("safetensors", "compress")
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"{path} does not exist; write it with memfit.compress.save")
    try:
        with st.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            names = handle.keys()  # a safe_open handle is not iterable itself
            tensors = {key: handle.get_tensor(key) for key in names}
    except Exception as exc:
        raise CompressError(f"{path} is not a readable safetensors file ({exc})") from exc
    if _KEY not in metadata:
        raise CompressError(f"{path} was not written by memfit.compress.save")
    description = json.loads(metadata[_KEY])
    if description.get("format") != _FORMAT:
        raise CompressError(
            f"{path} has format {description.get('format')}; this memfit "
            f"reads format {_FORMAT}: upgrade memfit"
        )
    for name, spec in description["layers"].items():
        prefix = name + "."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        layer = LAYER_TYPES[spec["type"]].from_spec(spec, own)
        _check_exists(model, name, path)
        set_module(model, name, layer)
    _resize_plain_layers(model, tensors)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CompressError(
            f"{path} does not fit this model ({str(exc).splitlines()[0]}); "
            "build the same architecture that was saved"
        ) from exc
    return model


def _check_exists(model: nn.Module, name: str, path: Path) -> None:
    try:
        model.get_submodule(name)
    except AttributeError as exc:
        raise CompressError(
            f"{path} has layer {name}, which this model lacks; build the "
            "same architecture that was saved"
        ) from exc


def _resize_plain_layers(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Rebuild Linear/Conv2d/BatchNorm layers whose saved weights have another size."""
    for name, module in list(model.named_modules()):
        saved = tensors.get(f"{name}.weight" if name else "weight")
        if saved is None or getattr(module, "weight", None) is None:
            continue
        if tuple(saved.shape) == tuple(module.weight.shape):
            continue
        if isinstance(module, nn.Linear):
            new = nn.Linear(saved.shape[1], saved.shape[0], bias=module.bias is not None)
        elif isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                saved.shape[1] * module.groups,
                saved.shape[0],
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                module.bias is not None,
                module.padding_mode,
            )
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            new = type(module)(
                saved.shape[0],
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
            )
        else:
            continue  # load_state_dict reports the mismatch
        set_module(model, name, new)
