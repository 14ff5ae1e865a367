"""AlexNet as the distillation literature evaluates it (DC's cross-architecture table): five
convolutions, no normalisation. At 32x32 the features end at 4x4; larger inputs are average-pooled
to 4x4 before the classifier, so one classifier fits every resolution."""

from __future__ import annotations

import torch
from torch import nn

from latentdistill.nets.common import fixed_depth


class AlexNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, resolution: int = 32, width: int = 0, depth: int = 0):
        super().__init__()
        fixed_depth("alexnet", depth)
        w = width or 128  # channels of the first convolution; the rest scale with it as in DC (128-192-256-192-192)
        c2, c3, c4 = w * 3 // 2, w * 2, w * 3 // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, c2, kernel_size=5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c4, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.embedding_size = c4 * 16
        self.classifier = nn.Linear(self.embedding_size, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(images))
