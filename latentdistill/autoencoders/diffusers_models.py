"""Adapters around diffusers autoencoders (hub ids or local folders).

diffusers models take images in [-1, 1]; a latent diffusion model expects `(z - shift_factor) * scaling_factor`.
Both conversions live here so that the rest of latentdistill only sees images in [0, 1] and model-ready latents.
"""

from __future__ import annotations

import os

import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from diffusers.models.modeling_utils import ModelMixin

from ..pretrained import load_diffusers_model
from .base import Autoencoder


class DiffusersAutoencoder(Autoencoder):
    """Shared conversions; subclasses say which diffusers class to load and how to read its encoder output."""

    model_class: type[ModelMixin]

    def __init__(self, model: ModelMixin, name_or_path: str | None = None, subfolder: str | None = None) -> None:
        config = model.config
        super().__init__(
            latent_channels=config.latent_channels,
            scaling_factor=config.scaling_factor,
            downscale=self.downscale_of(config),
            name_or_path=name_or_path,
            subfolder=subfolder,
        )
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.model = model
        self.freeze()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, subfolder: str | None = None) -> DiffusersAutoencoder:
        """Load a hub id or a local diffusers folder, in float32 (the distillation loop needs full precision)."""
        model = load_diffusers_model(cls.model_class, name_or_path, subfolder, "autoencoder")
        return cls(model, name_or_path=str(name_or_path), subfolder=subfolder)

    @staticmethod
    def downscale_of(config) -> int:
        raise NotImplementedError

    def _encode_unscaled(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        latents = self._encode_unscaled(images * 2 - 1)
        return (latents - self.shift_factor) * self.scaling_factor

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.model.decode(latents / self.scaling_factor + self.shift_factor).sample
        return ((images + 1) / 2).clamp(0, 1)


class KLAutoencoder(DiffusersAutoencoder):
    """Stable Diffusion style VAE; the posterior mode is used so that encoding is deterministic."""

    kind = "kl"
    model_class = AutoencoderKL

    @staticmethod
    def downscale_of(config) -> int:
        return 2 ** (len(config.block_out_channels) - 1)

    def _encode_unscaled(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images).latent_dist.mode()


class TinyDiffusersAutoencoder(DiffusersAutoencoder):
    """diffusers' TAESD (`AutoencoderTiny`), e.g. `madebyollin/taesd`; its latents are already model-ready."""

    kind = "tiny"
    model_class = AutoencoderTiny

    @staticmethod
    def downscale_of(config) -> int:
        return 2 ** (len(config.encoder_block_out_channels) - 1)

    def _encode_unscaled(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images).latents
