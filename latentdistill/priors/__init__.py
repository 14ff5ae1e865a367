"""Priors map learnable (latents z, conditioning c) to latents that the autoencoder decodes.

A new prior is a module with ``forward(latents, conditioning) -> latents``, ``initial_conditioning(labels)``
(None when it takes none), ``conditional`` and ``spec()``, registered in ``PRIORS``.
"""

from __future__ import annotations

from torch import nn

from latentdistill.config import PriorConfig
from latentdistill.errors import LatentDistillError
from latentdistill.priors.vae import VAEPrior

# Prior by name; "diffusion" (and with it diffusers) is imported when first used.
PRIORS = ("vae", "diffusion")


def __getattr__(name: str):
    if name == "DiffusionPrior":
        from latentdistill.priors.diffusion import DiffusionPrior

        return DiffusionPrior
    raise AttributeError(name)


def build_prior(config: PriorConfig, class_names: list[str] | None = None, precision: str = "fp32") -> nn.Module:
    if config.name not in PRIORS:
        raise LatentDistillError(f"config key 'prior.name': unknown prior '{config.name}' (known: {', '.join(PRIORS)})")
    if config.name == "vae":
        return VAEPrior()
    from latentdistill.priors.diffusion import DiffusionPrior

    return DiffusionPrior.from_config(config, class_names or [], precision)


__all__ = ["PRIORS", "DiffusionPrior", "VAEPrior", "build_prior"]
