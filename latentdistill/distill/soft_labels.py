"""Where DATM's learned soft labels start (Guo et al., ICLR 2024): the logits of the expert buffer's networks
on real images they classify correctly. The same teacher labels the random real images of a soft-label
evaluation, so the label gain and the data gain can be told apart (DD-Ranking)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from latentdistill.distill.buffer import expert_weights, load_buffer
from latentdistill.errors import LatentDistillError


@dataclass
class ExpertTeacher:
    """uint8 images (N, 3, H, W) -> the mean logits of a buffer's experts at their last epoch, with the run's input
    normalisation (ZCA included). ``key`` identifies it exactly (the buffer's protocol and finished experts), for
    caches of results it labelled."""

    net: nn.Module
    weights: list[dict[str, torch.Tensor]]
    normalize: nn.Module
    device: torch.device
    name: str
    key: str

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        self.net.eval()
        inputs = self.normalize(images.to(self.device).float() / 255)
        total = 0
        for weights in self.weights:
            total = total + torch.cat([functional_call(self.net, weights, (part,)).float() for part in inputs.split(batch_size)])
        return total / len(self.weights)


def expert_teacher(buffer_dir, expects: dict, net: nn.Module, normalize: nn.Module, device: torch.device) -> ExpertTeacher:
    """The teacher made of the buffer's experts. ``expects`` is what they must have been trained as (network,
    resolution, normalisation, ZCA): a teacher that saw other inputs would label nonsense."""
    buffer = load_buffer(buffer_dir)
    for key, value in expects.items():
        if buffer.meta.get(key) != value:
            raise LatentDistillError(f"expert buffer {buffer.directory} was trained with another {key} "
                                     f"({buffer.meta.get(key)!r}, this run: {value!r}): it cannot be the teacher")
    net = net.to(device)
    weights = [{name: value.to(device) for name, value in expert.items()} for expert in expert_weights(buffer, net)]
    files = [(path.name, path.stat().st_size) for path in buffer.files]
    name = f"mean logits of the {len(files)} experts of {buffer.directory} at epoch {buffer.epochs}"
    return ExpertTeacher(net, weights, normalize.to(device), device, name,
                         json.dumps({"meta": buffer.meta, "experts": files}, sort_keys=True))


@torch.no_grad()
def correctly_classified(teacher, images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor, per_class: int,
                         minimum: int, seed: int) -> torch.Tensor:
    """The rows, among ``per_class`` random ones of each class, that ``teacher`` classifies correctly (DATM's
    start: images the expert gets right), topped up with wrongly classified ones where fewer than ``minimum``
    are right."""
    generator = torch.Generator().manual_seed(seed + 17)
    kept = []
    for label in labels[rows].unique().tolist():
        candidates = rows[labels[rows] == label]
        candidates = candidates[torch.randperm(len(candidates), generator=generator)[:per_class]]
        right = teacher(images[candidates]).argmax(1).cpu() == label
        chosen = candidates[right]
        if len(chosen) < minimum:
            chosen = torch.cat([chosen, candidates[~right][: minimum - len(chosen)]])
        kept.append(chosen)
    return torch.cat(kept)
