"""The repeating blocks of a model: where checkpointing and sharding cut it."""

from __future__ import annotations

from torch import nn


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The longest run of sibling modules of one type that holds parameters.

    Transformers keep their layers in a ModuleList, ResNets in Sequential stages;
    both are found. Returns (qualified name, module) pairs in forward order, or
    an empty list when the model has no repeated structure.
    """
    best: list[tuple[str, nn.Module]] = []
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(parent.named_children())
        run: list[tuple[str, nn.Module]] = []
        for child_name, child in children:
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            has_params = any(True for _ in child.parameters())
            if run and (type(child) is not type(run[-1][1]) or not has_params):
                if len(run) > len(best):
                    best = run
                run = []
            if has_params and len(list(child.children())) > 0:
                run.append((full, child))
        if len(run) > len(best):
            best = run
    return best if len(best) >= 2 else []
