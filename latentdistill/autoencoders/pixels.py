"""Pixel space as an autoencoder: the latents are the normalised images themselves.

This is the baseline every latent-space distillation table needs (GLaD's and LD3M's "pixel" rows: the same
objective and budget, no decoder), and the way to know what an autoencoder's latent space costs or gives.
With ``autoencoder.kind: pixels`` every objective and prior-free run works on images with the same code:
``encode`` is ``(x - mean) / std`` with the data's statistics (the space DC, DSA, DM and MTT optimise in,
so their learning rates carry over) and ``decode`` is its inverse. ``decode`` does not clamp, as those
methods do not during distillation; the export clamps to [0, 1] when it writes the images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Autoencoder

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


class PixelSpace(Autoencoder):
    kind = "pixels"

    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> None:
        super().__init__(latent_channels=3, downscale=1, name_or_path="pixels")
        self.statistics = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, 3, 1, 1))

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, subfolder: str | None = None,
                        mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> PixelSpace:
        """No weights to read: ``name_or_path`` is ignored, the normalisation is the data's."""
        return cls(mean, std)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def spec(self) -> dict:
        return {**super().spec(), **self.statistics}

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.std.to(latents.dtype) + self.mean.to(latents.dtype)
