"""ConvNet-D*: the network of the dataset-distillation literature (DC, DSA, DM, MTT, GLaD, LD3M).

[conv 3x3 -> instance norm -> ReLU -> avg-pool 2x2] x depth, then one linear classifier. Instance norm
is GroupNorm with one group per channel, so no statistics couple the images of a batch: a class's
gradient does not depend on which other images share its batch.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        resolution: int = 32,
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        size = resolution
        for _ in range(depth):
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
            if norm == "instance":
                layers.append(nn.GroupNorm(width, width, affine=True))
            elif norm != "none":
                raise ValueError(f"unknown norm '{norm}' (instance | none)")
            layers += [nn.ReLU(inplace=True), nn.AvgPool2d(kernel_size=2, stride=2)]
            channels = width
            size //= 2
        self.features = nn.Sequential(*layers)
        self.embedding_size = width * size * size
        self.classifier = nn.Linear(self.embedding_size, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(images))
