"""Where DATM's learned soft labels start (Guo et al., ICLR 2024): the logits of the expert buffer's networks
on real images they classify correctly. The same teacher labels the random real images of a soft-label
evaluation, so the label gain and the data gain can be told apart (DD-Ranking)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from latentdistill.distill.buffer import expert_logits, load_buffer
from latentdistill.errors import LatentDistillError

Logits = Callable[[torch.Tensor], torch.Tensor]  # uint8 images (N, 3, H, W) -> logits (N, classes)


def expert_teacher(buffer_dir, expects: dict, net: nn.Module, normalize: nn.Module, device: torch.device) -> Logits:
    """uint8 images -> the mean logits of the buffer's experts at their last epoch, with this run's input
    normalisation (ZCA included). ``expects`` is what the experts must have been trained as (network,
    resolution, normalisation, ZCA): a teacher that saw other inputs would label nonsense."""
    buffer = load_buffer(buffer_dir)
    for key, value in expects.items():
        if buffer.meta.get(key) != value:
            raise LatentDistillError(f"expert buffer {buffer.directory} was trained with another {key} "
                                     f"({buffer.meta.get(key)!r}, this run: {value!r}): it cannot be the teacher")
    net, normalize = net.to(device), normalize.to(device)

    def logits(images: torch.Tensor) -> torch.Tensor:
        return expert_logits(buffer, net, normalize(images.to(device).float() / 255))

    return logits


@torch.no_grad()
def correctly_classified(teacher: Logits, images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, per_class: int,
                         seed: int) -> torch.Tensor:
    """The rows, among ``per_class`` random ones of each class, that ``teacher`` classifies correctly (DATM's
    start: images the expert gets right); a class none of whose sampled rows is right keeps all of them."""
    generator = torch.Generator().manual_seed(seed + 17)
    kept = []
    for label in labels[rows].unique().tolist():
        candidates = rows[labels[rows] == label]
        candidates = candidates[torch.randperm(len(candidates), generator=generator)[:per_class]]
        right = teacher(images[candidates]).argmax(1).cpu() == label
        kept.append(candidates[right] if bool(right.any()) else candidates)
    return torch.cat(kept)
