"""A small U-Net for segmentation, as a user would write one: skip connections, transposed
convolutions, a per-pixel loss."""

import torch
import torch.nn.functional as F
from torch import nn

from memfit import Workload


def _double(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
    )


class UNet(nn.Module):
    def __init__(self, width: int = 32, classes: int = 4):
        super().__init__()
        w = width
        self.down1, self.down2, self.down3 = _double(3, w), _double(w, 2 * w), _double(2 * w, 4 * w)
        self.bottom = _double(4 * w, 8 * w)
        self.up3 = nn.ConvTranspose2d(8 * w, 4 * w, 2, stride=2)
        self.dec3 = _double(8 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _double(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _double(2 * w, w)
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x):
        d1 = self.down1(x)
        d2 = self.down2(F.max_pool2d(d1, 2))
        d3 = self.down3(F.max_pool2d(d2, 2))
        b = self.bottom(F.max_pool2d(d3, 2))
        u3 = self.dec3(torch.cat([self.up3(b), d3], 1))
        u2 = self.dec2(torch.cat([self.up2(u3), d2], 1))
        u1 = self.dec1(torch.cat([self.up1(u2), d1], 1))
        return self.head(u1)


def workload(width: int = 32, image: int = 64, classes: int = 4) -> Workload:
    return Workload(
        name="unet",
        build_model=lambda: UNet(width, classes),
        make_batch=lambda b, device="cpu": (
            torch.randn(b, 3, image, image, device=device),
            torch.randint(0, classes, (b, image, image), device=device),
        ),
        loss_fn=F.cross_entropy,
        default_batch_size=8,
    )
