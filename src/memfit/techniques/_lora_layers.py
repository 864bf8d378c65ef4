"""LoRA's work on a model: which layers get adapters, how frozen weights are stored, and
the optimizer over the adapters. Kept apart from `lora.py` (the technique's protocol)
and free of a peft import at module level, so the planner reads targets without peft.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import types
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from memfit.errors import MissingDependencyError, TechniqueError
from memfit.measure.stopwatch import best_time

HEAD_NAMES = ("lm_head", "head", "classifier", "score")
"""Last name parts of output heads. peft's `all-linear` leaves out a Hugging Face
model's output embeddings and, for classifiers, `score`/`classifier`; these names do the
same for models that are not `PreTrainedModel`s (the zoo's and users' own)."""
ADAPTER_NAME = "default"


def is_linear(module: nn.Module) -> bool:
    """nn.Linear, or GPT-2's Conv1D (a transposed linear layer), recognised without
    importing transformers."""
    if isinstance(module, nn.Linear):
        return True
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "nx")


def default_targets(model: nn.Module) -> tuple[str, ...]:
    """Every linear layer except the output head: QLoRA's `all-linear` choice.

    Adapting every linear layer gets closest to full fine-tuning (Dettmers et al. 2023,
    section 4); the head is left out because it maps to the vocabulary or the labels,
    and a language model's head is tied to the embedding, which LoRA leaves alone.
    """
    heads: set[int] = set()
    get_output = getattr(model, "get_output_embeddings", None)
    if callable(get_output):
        out = get_output()
        if out is not None:
            heads.add(id(out))
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    names = []
    for name, module in model.named_modules():
        if not name or not is_linear(module) or id(module) in heads:
            continue
        if name.rsplit(".", 1)[-1] in HEAD_NAMES or id(module.weight) in embedding_weights:
            continue
        names.append(name)
    return tuple(names)


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear or Conv1D."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.nx, module.nf


def adapter_numel(shapes: Iterable[tuple[int, int]], rank: int) -> int:
    """Values of LoRA's A (rank x in) and B (out x rank) over the targeted layers."""
    return sum(rank * (fan_in + fan_out) for fan_in, fan_out in shapes)


# ---- frozen base weights ---------------------------------------------------------------------
def _cast_hooks(module: nn.Module, dtype: torch.dtype, original: torch.dtype) -> None:
    """Run `module` in `dtype` and hand its output back in its input's dtype (or, after an
    embedding, whose input is integers, in the weights' `original` dtype), so a layer
    stored in bf16 sits between fp32 layers unchanged: autocast's casts, for one layer."""

    def before(mod, args):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        mod._memfit_return_dtype = (
            first.dtype if first is not None and first.is_floating_point() else original
        )
        return tuple(
            a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in args
        )

    def after(mod, _args, output):
        back = mod._memfit_return_dtype
        if isinstance(output, torch.Tensor) and output.is_floating_point() and output.dtype != back:
            return output.to(back)
        return output

    module.register_forward_pre_hook(before)
    module.register_forward_hook(after)


def freeze(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


def store_frozen_in(model: nn.Module, dtype: torch.dtype, skip: set[str]) -> None:
    """Frozen linear and embedding weights (not those in `skip`) kept in `dtype`.

    Norms stay fp32: they are small and their statistics want the range. Tied weights
    are one Parameter, converted once (`.data` keeps the object, so the tie holds).
    """
    for name, module in model.named_modules():
        if name in skip or not (is_linear(module) or isinstance(module, nn.Embedding)):
            continue
        if ".lora_" in f".{name}":
            continue  # the adapters train in fp32
        original = module.weight.dtype
        if not original.is_floating_point:
            continue
        for param in module.parameters(recurse=False):
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
        _cast_hooks(module, dtype, original)


def quantize_int8(model: nn.Module, targets: Iterable[str]) -> None:
    """torchao's weight-only int8 (one int8 code per weight, one scale and zero point per
    output row) on the targeted layers; peft then wraps them with `TorchaoLoraLinear`.
    GPT-2's Conv1D layers become the equivalent nn.Linear first: torchao quantizes those."""
    if importlib.util.find_spec("torchao") is None:
        raise MissingDependencyError(
            "int8 base weights need torchao (pip install 'memfit[lowbit]')"
        )
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    wanted = set(targets)
    modules = dict(model.named_modules())
    for name in wanted:
        if not isinstance(modules[name], nn.Linear):
            _replace(model, name, _as_linear(modules[name]))
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda _m, fqn: fqn in wanted)
    for name, module in model.named_modules():
        if name in wanted:
            module.forward = types.MethodType(_frozen_quantized_forward, module)


def _as_linear(conv: nn.Module) -> nn.Linear:
    """GPT-2's Conv1D (x @ W + b, W stored in x out) as the nn.Linear torchao quantizes."""
    weight = conv.weight
    linear = nn.Linear(conv.nx, conv.nf, bias=conv.bias is not None, device="meta")
    linear.weight = nn.Parameter(weight.detach().t().contiguous(), requires_grad=False)
    if conv.bias is not None:
        linear.bias = nn.Parameter(conv.bias.detach(), requires_grad=False)
    return linear


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


class _FrozenQuantizedLinear(torch.autograd.Function):
    """A linear layer over a frozen quantized weight that keeps nothing for backward.

    torchao's int8 linear lets autograd save the dequantized fp32 weight (4 bytes a weight,
    more than the int8 codes it replaces) for the input's gradient; a frozen weight needs
    no gradient of its own, so backward dequantizes it again, one layer at a time, as
    bitsandbytes' 4-bit matmul does.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.weight = weight  # a frozen parameter the model holds anyway: no copy kept
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        weight = ctx.weight.dequantize().to(grad.dtype)
        return grad @ weight, None, None


def _frozen_quantized_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return _FrozenQuantizedLinear.apply(x, self.weight, self.bias)


def quantize_nf4(model: nn.Module, targets: Iterable[str], device: str) -> None:
    """QLoRA's storage: each targeted Linear replaced by bitsandbytes' `Linear4bit` (NF4
    codes, double-quantized scales, bf16 compute), quantized as it moves to the GPU."""
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise MissingDependencyError(
            "NF4 base weights need bitsandbytes on CUDA (pip install 'memfit[cuda]')"
        ) from exc
    if not str(device).startswith("cuda"):
        raise TechniqueError("NF4 base weights need a CUDA device; on CPU use int8 or bf16")
    modules = dict(model.named_modules())
    for name in targets:
        old = modules[name]
        if not isinstance(old, nn.Linear):
            raise TechniqueError(f"bitsandbytes quantizes nn.Linear only, not {name!r}")
        new = bnb.nn.Linear4bit(
            old.in_features,
            old.out_features,
            bias=old.bias is not None,
            compute_dtype=torch.bfloat16,
            quant_type="nf4",
            device="cpu",
        )
        new.weight = bnb.nn.Params4bit(
            old.weight.data.to("cpu"), requires_grad=False, quant_type="nf4"
        )
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.data.to(torch.bfloat16), requires_grad=False)
        _replace(model, name, new.to(device))  # Params4bit quantizes on the move


def inject_adapters(
    model: nn.Module,
    targets: tuple[str, ...],
    rank: int,
    alpha: int,
    dropout: float,
    device: str = "cpu",
    fake: bool = False,
) -> None:
    """peft's LoRA layers put in place: the user's module object stays the model."""
    try:
        from peft import LoraConfig
    except ImportError as exc:
        raise MissingDependencyError("LoRA needs peft (pip install 'memfit[lora]')") from exc
    if not targets:
        raise TechniqueError("LoRA found no linear layer to adapt in this model")
    modules = dict(model.named_modules())
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        # One regular expression, which peft matches against whole module names: a list
        # would match name suffixes ("0" would also hit "blocks.0").
        target_modules="|".join(re.escape(t) for t in targets),
        bias="none",
        # GPT-2's Conv1D stores its weight transposed (peft sets this itself, with a warning).
        fan_in_fan_out=any(not isinstance(modules[t], nn.Linear) for t in targets),
    )
    with warnings.catch_warnings():
        # peft warns that a torchao layer cannot merge its adapter back; memfit never merges.
        warnings.filterwarnings("ignore", message=".*get_apply_tensor_subclass.*")
        _inject(config, model, device, fake)


def _inject(config, model: nn.Module, device: str, fake: bool) -> None:
    from peft import inject_adapter_in_model

    if not fake:
        inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
        return
    # On fake tensors torch moves a module by swapping its parameters, which fake
    # parameters refuse. peft moves each new layer to its base layer's device and dtype;
    # build them there instead: on `device`, in fp32, which the base still is here.
    saved = nn.Module.to
    nn.Module.to = lambda self, *_a, **_k: self
    try:
        with torch.device(device):
            inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    finally:
        nn.Module.to = saved


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]


# ---- the optimizer ---------------------------------------------------------------------------
def adapter_optimizer(
    user: torch.optim.Optimizer, model: nn.Module, originals: dict[int, str]
) -> torch.optim.Optimizer:
    """An optimizer of the user's class over the adapters, on the user's very group dicts.

    Each adapter joins the group that held the weight it adapts (its learning rate and
    weight decay); groups left with nothing stay, empty, so a scheduler's per-group
    lambdas still line up and a scheduler stepping `user` steers the new optimizer
    (torch keeps the dicts it is given). The frozen weights leave the groups and their
    state is dropped: the user's optimizer would otherwise keep the fp32 originals of
    quantized weights alive.
    """
    group_of = {}
    for index, group in enumerate(user.param_groups):
        for param in group["params"]:
            if id(param) in originals:
                group_of[originals[id(param)]] = index
    buckets: list[list[nn.Parameter]] = [[] for _ in user.param_groups]
    for name, param in model.named_parameters():
        if "lora_" not in name or not param.requires_grad:
            continue
        owner = name.split(".lora_")[0]
        buckets[group_of.get(owner, 0)].append(param)
    kept = set(id(p) for bucket in buckets for p in bucket)
    for param in list(user.state):
        if id(param) not in kept:
            del user.state[param]
    for group, bucket in zip(user.param_groups, buckets, strict=True):
        group["params"] = bucket
    cls = type(user)
    try:
        return cls(list(user.param_groups), **dict(user.defaults))
    except TypeError:
        return cls(list(user.param_groups))


def original_weight_owners(model: nn.Module, targets: Iterable[str]) -> dict[int, str]:
    """id of each targeted layer's weight (as the user's optimizer holds it) -> layer name."""
    modules = dict(model.named_modules())
    return {id(modules[t].weight): t for t in targets}


def describe(model: nn.Module) -> dict[str, Any]:
    """Counts a user may want to see after applying: trained and frozen values."""
    trained = sum(p.numel() for p in adapter_parameters(model))
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"trained": trained, "frozen": frozen}


# ---- time --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def measured_base_slowdown(base: str, device: str = "cpu", size: int = 1024) -> float:
    """Time of a frozen layer stored as `base`, forward and backward to its input, over the
    time of a trained fp32 layer's forward and backward (weight gradient included).

    Both halves are timed here: LoRA saves the weight gradients' matmuls and pays for 16-bit
    or dequantizing kernels, which CPUs without bf16 instructions run several times slower.
    """
    dev = torch.device(device)
    # The ratio moves with the layer's size (0.25x to 0.8x on one CPU between 512 and
    # 3072 wide): probe one as wide as a small transformer's, with a batch of rows.
    x = torch.randn(256, size, device=dev, requires_grad=True)

    def layer(stored: str) -> nn.Module:
        lin = nn.Sequential(nn.Linear(size, size)).to(dev)
        if stored == "fp32":
            return lin
        freeze(lin)
        if stored == "int8":
            quantize_int8(lin, ["0"])
        elif stored == "nf4":
            quantize_nf4(lin, ["0"], device)
        store_frozen_in(lin, torch.bfloat16, skip={"0"} if stored != "bf16" else set())
        return lin

    def timed(module: nn.Module) -> float:
        return best_time(lambda: module(x).sum().backward(), dev)

    return max(timed(layer(base)) / timed(layer("fp32")), 0.05)


def offered_bases(device: str) -> list[str]:
    """Storages with a kernel on `device`: bf16 always; int8 with torchao; NF4 with
    bitsandbytes on CUDA."""
    bases = ["bf16"]
    if importlib.util.find_spec("torchao") is not None:
        bases.append("int8")
    if str(device).startswith("cuda") and importlib.util.find_spec("bitsandbytes") is not None:
        bases.append("nf4")
    return bases
