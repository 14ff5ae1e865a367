"""The synthetic set: learnable latents with fixed labels, and how it starts."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from latentdistill.errors import LatentDistillError

INITIALISATIONS = ("random_real", "kmeans", "kmeans_centroids", "noise")


@dataclass
class SyntheticSet:
    latents: torch.Tensor  # (N, C, h, w), the learnable part
    labels: torch.Tensor  # (N,), class-major: ipc rows per class
    embeddings: torch.Tensor | None = None  # (N, ...) learnable conditioning, for priors that take one
    learned: dict[str, torch.Tensor] = field(default_factory=dict)  # the objective's own (MTT: synthetic_lr)
    # (N, classes) learnable label logits (distill.learn_labels); the networks train on their softmax
    label_logits: torch.Tensor | None = None
    # (N,) the cache rows a start copied (random_real, kmeans); None for starts that are no real image
    source_rows: torch.Tensor | None = None


class ImageGenerator(nn.Module):
    """G(z, c) -> images in [0, 1]: the prior, then the autoencoder's decoder. Everything that turns the
    learnable tensors into pictures, for the loop and for the export alike."""

    def __init__(self, autoencoder: nn.Module, prior: nn.Module):
        super().__init__()
        self.autoencoder, self.prior = autoencoder, prior

    def forward(self, latents: torch.Tensor, embeddings: torch.Tensor | None = None, decode_chunk: int = 0) -> torch.Tensor:
        """``decode_chunk`` > 0 decodes in chunks whose activations are recomputed in the backward pass."""
        return self.autoencoder.decode_recomputed(self.prior(latents, embeddings), decode_chunk)

    @torch.no_grad()
    def images(self, latents: torch.Tensor, embeddings: torch.Tensor | None, device: torch.device,
               batch_size: int = 0) -> torch.Tensor:
        """The set as uint8 images (N, 3, H, W) on the CPU, decoded at once or ``batch_size`` at a time (a
        prior that takes one fixed noise draw per set, such as ``diffusion``, must see the set at once)."""
        self.to(device)
        if batch_size:
            rows = torch.arange(len(latents)).split(batch_size)
            decoded = torch.cat([self(latents[part].to(device), None if embeddings is None else embeddings[part].to(device))
                                 .float().cpu() for part in rows])
        else:
            decoded = self(latents.to(device), None if embeddings is None else embeddings.to(device)).cpu()
        return (decoded.clamp(0, 1) * 255).round().to(torch.uint8)


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

    ``random_real`` copies encoded real images (the standard start in GLaD and LD3M). ``kmeans`` runs
    k-means with k = ``ipc`` on each class's real latents and takes the real latent nearest each
    centroid (a real image, so the start decodes cleanly); ``kmeans_centroids`` takes the centroids
    themselves. ``noise`` draws Gaussian latents with the real latents' per-channel mean and std.
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
    if init in ("kmeans", "kmeans_centroids"):
        for label in range(num_classes):
            candidates = rows[labels[rows] == label]
            points = latents[candidates].float().flatten(1)
            centroids, _ = kmeans(points, ipc, generator)
            span = slice(label * ipc, (label + 1) * ipc)
            if init == "kmeans_centroids":
                start[span] = centroids.view(ipc, *start.shape[1:])
            else:
                nearest = nearest_distinct(points, centroids)
                chosen_rows[span] = candidates[nearest]
                start[span] = latents[candidates[nearest]].float()
    if init == "noise":
        real = latents[rows].float()
        mean = real.mean(dim=(0, 2, 3), keepdim=True)
        std = real.std(dim=(0, 2, 3), keepdim=True)
        start = mean + std * torch.randn(start.shape, generator=generator)
    source = chosen_rows.clone() if init in ("random_real", "kmeans") else None
    return SyntheticSet(start.contiguous(), labels[chosen_rows].clone(), source_rows=source)


def kmeans(points: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding; returns (centroids (k, D), assignment (N,))."""
    first = int(torch.randint(len(points), (1,), generator=generator))
    centroids = points[first : first + 1]
    for _ in range(1, k):
        distance = torch.cdist(points, centroids).min(dim=1).values ** 2
        if float(distance.sum()) == 0:
            pick = int(torch.randint(len(points), (1,), generator=generator))
        else:
            pick = int(torch.multinomial(distance / distance.sum(), 1, generator=generator))
        centroids = torch.cat([centroids, points[pick : pick + 1]])
    assignment = torch.cdist(points, centroids).argmin(dim=1)
    for _ in range(iterations):
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=k).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)  # an empty cluster keeps its centroid
        updated = torch.cdist(points, centroids).argmin(dim=1)
        if torch.equal(updated, assignment):
            break
        assignment = updated
    return centroids, assignment


def nearest_distinct(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """For each centroid, the row of the nearest point not already taken by an earlier centroid."""
    distance = torch.cdist(centroids, points)
    taken: list[int] = []
    for row in distance:
        if taken:
            row = row.clone()
            row[taken] = float("inf")
        taken.append(int(row.argmin()))
    return torch.tensor(taken, dtype=torch.long)
