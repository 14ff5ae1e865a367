"""Prior ``vae``: the synthetic latents are decoded as they are (the decoder-only route of GLaD/LD3M)."""

from __future__ import annotations

import torch
from torch import nn


class VAEPrior(nn.Module):
    """Identity from learnable latents to latents ready to decode; conditioning is unused."""

    name = "vae"
    conditional = False

    def forward(self, latents: torch.Tensor, conditioning: torch.Tensor | None = None) -> torch.Tensor:
        return latents

    def initial_conditioning(self, labels: torch.Tensor) -> None:
        return None

    def spec(self) -> dict:
        return {"name": self.name}
