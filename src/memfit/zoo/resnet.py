"""CIFAR-style residual networks (32x32x3 inputs): ResNet-18 and WideResNet-28-2."""

from __future__ import annotations

from torch import nn

from memfit.workload import Workload
from memfit.zoo._common import classification_loss, image_batch_maker


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus shortcut (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class WideBlock(nn.Module):
    """Pre-activation block of Zagoruyko & Komodakis 2016: bn-relu-conv twice."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class CifarResNet(nn.Module):
    """Stem conv, residual stages kept in one flat Sequential, pool, linear head."""

    def __init__(
        self,
        block: type[nn.Module],
        stem: int,
        stages: list[tuple[int, int, int]],
        classes: int,
        pre_activation: bool,
    ):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False))
        if not pre_activation:
            self.stem.append(nn.BatchNorm2d(stem))
            self.stem.append(nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c_in = stem
        for c_out, count, stride in stages:
            for i in range(count):
                layers.append(block(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*layers)
        tail: list[nn.Module] = [nn.BatchNorm2d(c_in), nn.ReLU()] if pre_activation else []
        self.pool = nn.Sequential(*tail, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, classes)

    def forward(self, x):
        return self.head(self.pool(self.blocks(self.stem(x))))


def resnet18(classes: int = 10, image: int = 32, width: int = 64) -> Workload:
    stages = [(width, 2, 1), (2 * width, 2, 2), (4 * width, 2, 2), (8 * width, 2, 2)]
    return Workload(
        name="resnet18",
        build_model=lambda: CifarResNet(BasicBlock, width, stages, classes, pre_activation=False),
        make_batch=image_batch_maker(3, image, image, classes),
        loss_fn=classification_loss,
        default_batch_size=128,
        description=f"ResNet-18, CIFAR-style, {image}x{image}x3",
        config=dict(classes=classes, image=image, width=width),
    )


def wrn_28_2(classes: int = 10, image: int = 32, depth: int = 28, widen: int = 2) -> Workload:
    if (depth - 4) % 6:
        raise ValueError("WideResNet depth must be 6n+4 (e.g. 16, 22, 28, 40)")
    n = (depth - 4) // 6
    stages = [(16 * widen, n, 1), (32 * widen, n, 2), (64 * widen, n, 2)]
    return Workload(
        name="wrn-28-2",
        build_model=lambda: CifarResNet(WideBlock, 16, stages, classes, pre_activation=True),
        make_batch=image_batch_maker(3, image, image, classes),
        loss_fn=classification_loss,
        default_batch_size=128,
        description=f"WideResNet-{depth}-{widen}, {image}x{image}x3",
        config=dict(classes=classes, image=image, depth=depth, widen=widen),
    )
