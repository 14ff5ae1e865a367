"""A small Vision Transformer (Dosovitskiy et al.) for tiny data: 8x8 patches tokens at any input
size (patch 4 at 32x32, 8 at 64x64, ...), a class token, learned positions, pre-norm blocks."""

from __future__ import annotations

import torch
from torch import nn


class ViT(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, resolution: int = 32, width: int = 0, depth: int = 0,
                 heads: int = 4, grid: int = 8):
        super().__init__()
        width = width or 192
        depth = depth or 6
        if resolution % grid:
            raise ValueError(f"ViT needs a resolution divisible by {grid}, got {resolution}")
        patch = resolution // grid
        self.patchify = nn.Conv2d(in_channels, width, kernel_size=patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.positions = nn.Parameter(torch.randn(1, grid * grid + 1, width) * 0.02)
        block = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.embedding_size = width
        self.classifier = nn.Linear(width, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patchify(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(len(tokens), -1, -1), tokens], dim=1) + self.positions
        return self.norm(self.blocks(tokens))[:, 0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(images))
