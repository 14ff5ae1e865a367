"""The synthetic set: learnable latents with fixed labels, and how it starts."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentdistill.errors import LatentDistillError

INITIALISATIONS = ("random_real", "noise")


@dataclass
class SyntheticSet:
    latents: torch.Tensor  # (N, C, h, w), the learnable part
    labels: torch.Tensor  # (N,), class-major: ipc rows per class
    embeddings: torch.Tensor | None = None  # (N, ...) learnable conditioning, for priors that take one


def initial_synthetic_set(
    latents: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor,
    num_classes: int,
    ipc: int,
    init: str,
    seed: int,
) -> SyntheticSet:
    """Start from ``ipc`` latents per class, drawn from ``rows`` of the real latent cache.

    ``random_real`` copies encoded real images (the standard start in GLaD and LD3M); ``noise`` draws
    Gaussian latents with the real latents' per-channel mean and std.
    """
    if init not in INITIALISATIONS:
        raise LatentDistillError(f"config key 'distill.init': unknown initialisation '{init}' (known: {', '.join(INITIALISATIONS)})")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(num_classes):
        candidates = rows[labels[rows] == label]
        if len(candidates) < ipc:
            raise LatentDistillError(f"class {label} has {len(candidates)} training images, fewer than distill.ipc={ipc}")
        chosen.append(candidates[torch.randperm(len(candidates), generator=generator)[:ipc]])
    chosen_rows = torch.cat(chosen)
    start = latents[chosen_rows].clone().float()
    if init == "noise":
        real = latents[rows].float()
        mean = real.mean(dim=(0, 2, 3), keepdim=True)
        std = real.std(dim=(0, 2, 3), keepdim=True)
        start = mean + std * torch.randn(start.shape, generator=generator)
    return SyntheticSet(start.contiguous(), labels[chosen_rows].clone())
