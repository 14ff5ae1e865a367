"""VGG-11 (configuration A) with a norm after every convolution; instance norm by default, as DC's
cross-architecture evaluation uses it, batch norm as ``vgg11_bn``. Five max-pools take 32x32 to
1x1; larger inputs end in a global average pool, so the classifier is one linear layer always."""

from __future__ import annotations

import torch
from torch import nn

from latentdistill.nets.common import fixed_depth, norm_layer

# Channels of each convolution, as multiples of the first stage's width; "M" is a 2x2 max-pool.
VGG11_LAYERS = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


class VGG11(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, resolution: int = 32, width: int = 0, depth: int = 0,
                 norm: str = "instance"):
        super().__init__()
        fixed_depth("vgg11", depth)
        width = width or 64
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG11_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = width * item
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), norm_layer(norm, out), nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*layers)
        self.embedding_size = channels
        self.classifier = nn.Linear(channels, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(images))
