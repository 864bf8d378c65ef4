"""A small conv net with BatchNorm, shaped for scikit-learn's 8x8 digits by default."""

from __future__ import annotations

from torch import nn

from memfit.workload import Workload
from memfit.zoo._common import classification_loss, image_batch_maker


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, channels: int, classes: int):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, channels),
            conv_bn_relu(channels, channels),
            nn.MaxPool2d(2),
            conv_bn_relu(channels, 2 * channels),
            conv_bn_relu(2 * channels, 2 * channels),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(2 * channels, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def cnn(channels: int = 32, image: int = 8, in_channels: int = 1, classes: int = 10) -> Workload:
    from memfit.zoo.digits import load_digits_tensors

    digits_shaped = (image, in_channels, classes) == (8, 1, 10)
    return Workload(
        name="cnn",
        build_model=lambda: SmallCNN(in_channels, channels, classes),
        make_batch=image_batch_maker(in_channels, image, image, classes),
        loss_fn=classification_loss,
        default_batch_size=64,
        description=f"4-layer CNN with BatchNorm, {channels} channels, {image}x{image} input",
        config=dict(channels=channels, image=image, in_channels=in_channels, classes=classes),
        load_data=load_digits_tensors if digits_shaped else None,
    )
