"""The one interface every autoencoder adapter offers: images in [0, 1] <-> latents.

Callers (the latent cache, the priors, the distillation loop) never see a model's own value range or
scaling factor; each adapter hides them behind `encode` and `decode`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from ..errors import LatentDistillError


class Autoencoder(nn.Module):
    """A frozen image autoencoder with images in [0, 1] and latents ready for distillation.

    Subclasses implement `_encode` and `_decode`; the public methods check shapes first so that a wrong
    tensor fails with a clear message instead of deep inside a convolution.
    """

    kind: str = "base"

    def __init__(
        self,
        latent_channels: int,
        scaling_factor: float = 1.0,
        downscale: int = 8,
        name_or_path: str | None = None,
        subfolder: str | None = None,
        variant: str | None = None,
    ) -> None:
        super().__init__()
        self.latent_channels = int(latent_channels)
        self.scaling_factor = float(scaling_factor)
        self.downscale = int(downscale)
        self.name_or_path = name_or_path
        self.subfolder = subfolder
        self.variant = variant

    def spec(self) -> dict[str, Any]:
        """What to record beside distilled latents so that they can be decoded again later."""
        return {
            "kind": self.kind,
            "name_or_path": self.name_or_path,
            "subfolder": self.subfolder,
            "variant": self.variant,
            "latent_channels": self.latent_channels,
            "scaling_factor": self.scaling_factor,
        }

    def freeze(self) -> Autoencoder:
        """Pretrained weights never train here: only the latents (and conditioning) are learnt."""
        self.requires_grad_(False)
        return self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Map images (N, 3, H, W) in [0, 1] to latents (N, latent_channels, H / 8, W / 8)."""
        if images.ndim != 4 or images.shape[1] != 3 or any(size % self.downscale for size in images.shape[2:]):
            raise LatentDistillError(
                f"{self.kind} autoencoder expects images of shape (N, 3, H, W) with H and W multiples of "
                f"{self.downscale}, got {tuple(images.shape)}"
            )
        return self._encode(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Map latents back to images in [0, 1]; differentiable, so the distillation loop can train latents."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise LatentDistillError(
                f"{self.kind} autoencoder expects latents of shape (N, {self.latent_channels}, h, w), "
                f"got {tuple(latents.shape)}"
            )
        return self._decode(latents)

    def decode_recomputed(self, latents: torch.Tensor, chunk: int) -> torch.Tensor:
        """``decode`` in chunks of ``chunk`` latents whose activations are recomputed in the backward pass.

        A large decoder (the SD VAE at 256 px) keeps gigabytes of activations per image for the backward
        pass; this keeps one chunk's worth, so the synthetic set's size no longer sets the peak memory.
        """
        if chunk <= 0 or not torch.is_grad_enabled():
            return self.decode(latents)
        return torch.cat([checkpoint(self.decode, part, use_reentrant=False) for part in latents.split(chunk)])

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def encode_batched(self, images: torch.Tensor, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Encode a whole dataset without holding its activations at once (with a progress bar when asked);
        returns CPU float32."""
        return self._map_batched(self.encode, images, batch_size, "encode" if progress else None)

    @torch.no_grad()
    def decode_batched(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Decode many latents (export, previews) in memory-sized batches; returns CPU float32."""
        return self._map_batched(self.decode, latents, batch_size)

    def _map_batched(
        self, function: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int,
        description: str | None = None,
    ) -> torch.Tensor:
        device = self.device
        batches = inputs.split(batch_size)
        shown = tqdm(batches, desc=description, unit="batch", disable=description is None)
        outputs = [function(batch.to(device, torch.float32)).float().cpu() for batch in shown]
        if not outputs:
            raise LatentDistillError(f"{self.kind} autoencoder was given an empty batch of shape {tuple(inputs.shape)}")
        return torch.cat(outputs)
