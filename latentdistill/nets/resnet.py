"""ResNet-18 with basic blocks (He et al.). At 32x32 the stem is one 3x3 convolution with no
down-sampling (the CIFAR variant the distillation papers evaluate); from 64x64 up it is the ImageNet
stem (7x7 stride 2, then a 3x3 max-pool). Instance norm by default as in DC's ``ResNet18``, batch
norm as ``resnet18_bn``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from latentdistill.nets.common import fixed_depth, norm_layer


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_layer(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = norm_layer(norm, channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), norm_layer(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, resolution: int = 32, width: int = 0, depth: int = 0,
                 norm: str = "instance"):
        super().__init__()
        fixed_depth("resnet18", depth)
        width = width or 64
        if resolution >= 64:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                                      norm_layer(norm, width), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), norm_layer(norm, width),
                                      nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        channels = width
        for stage in range(4):
            out = width * 2**stage
            for index in range(2):
                blocks.append(BasicBlock(channels, out, 2 if (stage > 0 and index == 0) else 1, norm))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embedding_size = channels
        self.classifier = nn.Linear(channels, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(images))).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(images))
