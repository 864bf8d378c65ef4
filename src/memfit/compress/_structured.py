"""Structured pruning: drop whole output channels / neurons and rebuild smaller layers.

Which layers depend on which is read from a `torch.fx` trace: a Linear or Conv2d
(the producer) can lose output channels when every path from its output reaches
only Linear / Conv2d layers (the consumers), through ops that keep channels
apart (BatchNorm, activations, dropout, pooling, and a flatten after a pool to
1x1). Residual adds, concatenations, reshapes and the model's output make a
producer unprunable; it is left whole and named in the notes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from memfit.compress._report import LayerReport, layer_bytes
from memfit.compress._targets import check_skip, set_module
from memfit.errors import CompressError

_PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.Hardswish,
    nn.Mish,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
)
_POOL_TO_ONE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PASS_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.gelu,
    F.silu,
    F.leaky_relu,
    F.elu,
    F.dropout,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    F.max_pool2d,
    F.avg_pool2d,
}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class _Group:
    producer: str
    batchnorms: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)


def prune_channels(model: nn.Module, amount: float, scope: str, skip: Iterable[str]):
    """Remove `amount` of the prunable layers' output channels in place."""
    groups, blocked = _find_groups(model, tuple(skip))
    if not groups:
        raise CompressError(
            "no layer can lose channels: every Linear/Conv2d output feeds the "
            "model output, a residual add, a concat or a reshape; "
            "use structured=False"
        )
    modules = dict(model.named_modules())
    scores = {g.producer: _channel_scores(modules, g) for g in groups}
    keep = _choose_channels(scores, amount, scope)
    before = {
        name: layer_bytes(modules[name])
        for g in groups
        for name in [g.producer, *g.batchnorms, *g.consumers]
    }
    out_index = {g.producer: keep[g.producer] for g in groups}
    in_index = {c: keep[g.producer] for g in groups for c in g.consumers}
    bn_index = {b: keep[g.producer] for g in groups for b in g.batchnorms}
    for name in dict.fromkeys([*out_index, *in_index]):
        set_module(
            model, name, _slice_layer(modules[name], out_index.get(name), in_index.get(name))
        )
    for name, idx in bn_index.items():
        set_module(model, name, _slice_batchnorm(modules[name], idx))
    layers = []
    for g in groups:
        new = model.get_submodule(g.producer)
        old_channels = len(scores[g.producer])
        layers.append(
            LayerReport(
                g.producer,
                "conv2d" if isinstance(new, nn.Conv2d) else "linear",
                before[g.producer],
                layer_bytes(new),
                f"dense fp32, {len(keep[g.producer])} of {old_channels} output channels",
                len(keep[g.producer]) / old_channels,
            )
        )
    notes = [
        f"channels removed from {len(groups)} layers; inputs of "
        f"{len(in_index)} following layers and {len(bn_index)} BatchNorms shrank with them"
    ]
    if blocked:
        notes.append(
            f"left whole (output feeds the model output, an add, a concat or a "
            f"reshape): {', '.join(blocked)}"
        )
    return layers, notes


def _find_groups(model: nn.Module, skip: tuple[str, ...]) -> tuple[list[_Group], list[str]]:
    skip = check_skip(model, skip)
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:
        raise CompressError(
            f"structured pruning needs a model torch.fx can trace ({exc}); use structured=False"
        ) from exc
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    groups, blocked = [], []
    for node in graph.nodes:
        if node.op != "call_module" or not _is_prunable(modules[node.target]):
            continue
        name = node.target
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        group = _follow(node, modules)
        # A layer called in several places cannot be resized for one of them only.
        shared = group is not None and any(
            calls[n] > 1 for n in [name, *group.consumers, *group.batchnorms]
        )
        if group is None or shared or not group.consumers:
            blocked.append(name)
        else:
            groups.append(group)
    return groups, blocked


def _is_prunable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _follow(start: fx.Node, modules: dict[str, nn.Module]) -> _Group | None:
    """The layers that see `start`'s output channels, or None if a path leaves the safe set."""
    group = _Group(start.target)
    is_conv = isinstance(modules[start.target], nn.Conv2d)
    # (node, spatial size known to be 1x1 at this point)
    pending = [(user, False) for user in start.users]
    while pending:
        node, pooled = pending.pop()
        if node.op == "call_module":
            module = modules[node.target]
            if _is_prunable(module):
                if isinstance(module, nn.Linear) and is_conv and not pooled:
                    return None
                group.consumers.append(node.target)
                continue
            if isinstance(module, _BATCHNORMS):
                group.batchnorms.append(node.target)
            elif isinstance(module, nn.Flatten):
                if not (is_conv and pooled and module.start_dim == 1 and module.end_dim == -1):
                    return None
            elif isinstance(module, _POOL_TO_ONE):
                if module.output_size not in (1, (1, 1)):
                    return None
                pooled = True
            elif not isinstance(module, _PASS_MODULES):
                return None
        elif node.op == "call_function" and node.target in _PASS_FUNCTIONS:
            pass
        elif _is_flatten(node):
            # Only (N, C, 1, 1) -> (N, C) keeps channels apart; a Linear's output may be 3-D.
            if not (is_conv and pooled):
                return None
        elif node.op == "call_method" and node.target in _PASS_METHODS:
            pass
        else:
            return None
        pending.extend((user, pooled) for user in node.users)
    return group


def _is_flatten(node: fx.Node) -> bool:
    is_method = node.op == "call_method" and node.target == "flatten"
    if not (is_method or (node.op == "call_function" and node.target is torch.flatten)):
        return False
    start_dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    return start_dim == 1 and tuple(node.args[2:]) in ((), (-1,))


def _channel_scores(modules: dict[str, nn.Module], group: _Group) -> torch.Tensor:
    """L2 norm of each output channel's weights, times the scale of any BatchNorm after it
    (a channel a BatchNorm multiplies by ~0 matters little: network slimming, Liu et al. 2017)."""
    weight = modules[group.producer].weight.detach()
    score = weight.reshape(weight.shape[0], -1).norm(dim=1)
    for name in group.batchnorms:
        bn = modules[name]
        if bn.affine and bn.running_var is not None:
            score = score * bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)
    return score


def _choose_channels(
    scores: dict[str, torch.Tensor], amount: float, scope: str
) -> dict[str, torch.Tensor]:
    """Sorted indices of the channels each producer keeps (at least one)."""
    keep = {}
    if scope == "layer":
        for name, score in scores.items():
            count = max(1, round(len(score) * (1 - amount)))
            keep[name] = score.topk(count).indices.sort().values
        return keep
    # Global: scores divided by their layer's mean so that layers of different scale compare.
    normalized = {name: s / s.mean().clamp_min(1e-12) for name, s in scores.items()}
    everything = torch.cat(list(normalized.values()))
    remove = int(round(amount * everything.numel()))
    threshold = float(everything.kthvalue(remove).values) if remove else -1.0
    for name, score in normalized.items():
        kept = (score > threshold).nonzero().squeeze(1)
        keep[name] = kept if kept.numel() else score.argmax().reshape(1)
    return keep


def _slice_layer(layer: nn.Module, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None):
    weight = layer.weight.detach()
    if out_idx is not None:
        weight = weight[out_idx]
    if in_idx is not None:
        weight = weight[:, in_idx]
    bias = layer.bias
    if bias is not None and out_idx is not None:
        bias = bias.detach()[out_idx]
    if isinstance(layer, nn.Linear):
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        new = nn.Conv2d(
            weight.shape[1],
            weight.shape[0],
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            1,
            bias is not None,
            layer.padding_mode,
        )
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.train(layer.training)
    return new


def _slice_batchnorm(bn: nn.Module, idx: torch.Tensor) -> nn.Module:
    new = type(bn)(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new = new.to(device=idx.device)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[idx])
            new.bias.copy_(bn.bias[idx])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[idx])
            new.running_var.copy_(bn.running_var[idx])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(bn.training)
    return new
