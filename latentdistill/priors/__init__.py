"""Priors map learnable (latents z, conditioning c) to latents that the autoencoder decodes.

A prior is a module with ``forward(latents, conditioning) -> latents``, ``initial_conditioning(labels)``
(None when it takes none), ``conditional`` and ``spec()``. Each is registered in ``PRIORS`` under the
name config key ``prior.name`` uses, with a builder ``(PriorConfig, class_names, precision) -> prior``;
``diffusion`` (and with it diffusers) is imported when first used.
"""

from __future__ import annotations

from torch import nn

from latentdistill.config import PriorConfig
from latentdistill.priors.vae import VAEPrior
from latentdistill.registry import Registry

PRIORS = Registry("prior", "prior.name")
PRIORS.register("vae", lambda config, class_names, precision: VAEPrior())
PRIORS.register("diffusion", "latentdistill.priors.diffusion:DiffusionPrior.from_config")


def build_prior(config: PriorConfig, class_names: list[str] | None = None, precision: str = "fp32") -> nn.Module:
    return PRIORS.build(config.name, config, class_names or [], precision)


__all__ = ["PRIORS", "VAEPrior", "build_prior"]
