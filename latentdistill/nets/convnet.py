"""ConvNet-D*: the network of the dataset-distillation literature (DC, DSA, DM, MTT, GLaD, LD3M).

[conv 3x3 -> norm -> ReLU -> avg-pool 2x2] x depth, then one linear classifier. The default depth
follows the literature's sizing: 3 at 32x32 (ConvNet-D3), one more per doubling of the input
(D4 at 64, D5 at 128, D6 at 256), so the last feature map stays 4x4. A network deeper than its
input allows (D6 at 32x32) stops pooling at 1x1.
"""

from __future__ import annotations

import torch
from torch import nn

from latentdistill.nets.common import halvings, norm_layer


class ConvNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        resolution: int = 32,
        width: int = 0,
        depth: int = 0,
        norm: str = "instance",
    ):
        super().__init__()
        width = width or 128
        depth = depth or 3 + halvings(resolution)
        layers: list[nn.Module] = []
        channels = in_channels
        size = resolution
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), norm_layer(norm, width), nn.ReLU(inplace=True)]
            if size > 1:  # a network deeper than the input allows keeps its last layers at 1x1
                layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
                size //= 2
            channels = width
        self.features = nn.Sequential(*layers)
        self.embedding_size = width * size * size
        self.classifier = nn.Linear(self.embedding_size, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(images))
