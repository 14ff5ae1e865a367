"""Priors map learnable (latents z, conditioning c) to latents that the autoencoder decodes."""

from __future__ import annotations

from torch import nn

from latentdistill.config import PriorConfig
from latentdistill.errors import LatentDistillError
from latentdistill.priors.vae import VAEPrior

PRIORS = {"vae": VAEPrior}


def build_prior(config: PriorConfig) -> nn.Module:
    if config.name not in PRIORS:
        raise LatentDistillError(f"config key 'prior.name': unknown prior '{config.name}' (known: {', '.join(PRIORS)})")
    return PRIORS[config.name]()


__all__ = ["PRIORS", "VAEPrior", "build_prior"]
