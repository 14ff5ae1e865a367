"""Super-resolution networks: each maps an LR image (N, 3, h, w) in [0, 1] to (N, 3, h*scale, w*scale).

SRCNN upscales with bicubic first and refines at HR; FSRCNN, ESPCN and EDSR work at LR size and
upscale at the end (a transposed convolution, pixel shuffle), which makes them 10-100x cheaper per
image. ``width``/``depth`` 0 take each paper's sizes (EDSR: the small baseline, see below).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SRCNN(nn.Module):
    """Dong et al. 2014, the 9-1-5 network (64 and 32 channels), on the bicubic-upscaled input."""

    def __init__(self, scale: int, channels: int = 3, width: int = 0, depth: int = 0):
        super().__init__()
        width = width or 64
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 9, padding=4), nn.ReLU(inplace=True),
            nn.Conv2d(width, width // 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, channels, 5, padding=2),
        )

    def features(self, lr: torch.Tensor) -> torch.Tensor:
        upscaled = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return self.body[:4](upscaled)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        upscaled = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return upscaled + self.body(upscaled)  # a residual on bicubic: the same function, faster to train


class FSRCNN(nn.Module):
    """Dong et al. 2016: feature extraction d, shrinking s, m mapping layers, expanding, then a 9x9
    transposed convolution with stride ``scale`` (d=56, s=12, m=4)."""

    def __init__(self, scale: int, channels: int = 3, width: int = 0, depth: int = 0, shrink: int = 12):
        super().__init__()
        d, m = width or 56, depth or 4
        layers: list[nn.Module] = [nn.Conv2d(channels, d, 5, padding=2), nn.PReLU(d), nn.Conv2d(d, shrink, 1), nn.PReLU(shrink)]
        for _ in range(m):
            layers += [nn.Conv2d(shrink, shrink, 3, padding=1), nn.PReLU(shrink)]
        layers += [nn.Conv2d(shrink, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(d, channels, 9, stride=scale, padding=4, output_padding=scale - 1)
        nn.init.normal_(self.upsample.weight, std=0.001)
        nn.init.zeros_(self.upsample.bias)

    def features(self, lr: torch.Tensor) -> torch.Tensor:
        return self.body(lr)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.body(lr))


class ESPCN(nn.Module):
    """Shi et al. 2016: 5x5 (64), 3x3 (32), 3x3 (3 scale^2) convolutions with tanh, then pixel shuffle."""

    def __init__(self, scale: int, channels: int = 3, width: int = 0, depth: int = 0):
        super().__init__()
        width = width or 64
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 5, padding=2), nn.Tanh(),
            nn.Conv2d(width, width // 2, 3, padding=1), nn.Tanh(),
        )
        self.upsample = nn.Sequential(nn.Conv2d(width // 2, channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def features(self, lr: torch.Tensor) -> torch.Tensor:
        return self.body(lr)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.body(lr))


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class EDSR(nn.Module):
    """Lim et al. 2017, EDSR-baseline without batch norm; small by default (32 channels, 8 blocks;
    the paper's baseline is 64 and 16), pixel-shuffle upsampling (x4 as two x2 stages)."""

    def __init__(self, scale: int, channels: int = 3, width: int = 0, depth: int = 0):
        super().__init__()
        width, blocks = width or 32, depth or 8
        self.head = nn.Conv2d(channels, width, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)], nn.Conv2d(width, width, 3, padding=1))
        stages = [2, 2] if scale == 4 else [scale]
        upsample: list[nn.Module] = []
        for factor in stages:
            upsample += [nn.Conv2d(width, width * factor * factor, 3, padding=1), nn.PixelShuffle(factor)]
        self.upsample = nn.Sequential(*upsample, nn.Conv2d(width, channels, 3, padding=1))

    def features(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.head(lr)
        return x + self.body(x)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.features(lr))
