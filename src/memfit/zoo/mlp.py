"""A plain MLP: a stack of Linear + activation blocks (the checkpointing textbook case)."""

from __future__ import annotations

from torch import nn

from memfit.workload import Workload
from memfit.zoo._common import classification_loss, vector_batch_maker


class MLPBlock(nn.Module):
    def __init__(self, width_in: int, width_out: int, activation: str):
        super().__init__()
        self.linear = nn.Linear(width_in, width_out)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()

    def forward(self, x):
        return self.act(self.linear(x))


class MLP(nn.Module):
    def __init__(self, inputs: int, depth: int, width: int, classes: int, activation: str):
        super().__init__()
        widths = [inputs] + [width] * depth
        self.blocks = nn.Sequential(
            *(MLPBlock(a, b, activation) for a, b in zip(widths[:-1], widths[1:], strict=True))
        )
        self.head = nn.Linear(widths[-1], classes)

    def forward(self, x):
        return self.head(self.blocks(x))


def mlp(
    depth: int = 8,
    width: int = 1024,
    inputs: int = 784,
    classes: int = 10,
    activation: str = "relu",
) -> Workload:
    if depth < 1 or width < 1:
        raise ValueError("depth and width must be at least 1")
    return Workload(
        name="mlp",
        build_model=lambda: MLP(inputs, depth, width, classes, activation),
        make_batch=vector_batch_maker(inputs, classes),
        loss_fn=classification_loss,
        default_batch_size=256,
        description=f"MLP, {depth} blocks of Linear({width})+{activation}",
        config=dict(
            depth=depth, width=width, inputs=inputs, classes=classes, activation=activation
        ),
    )
