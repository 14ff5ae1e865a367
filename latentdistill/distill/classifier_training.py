"""What trains a classifier besides its hyper-parameters, as one object, and the one epoch loop that trains
it: the expert trainer (buffer) and the evaluation protocol both use them, for one network or several at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.nets.stacked import StackedNetworks
from latentdistill.runtime import Normalize, autocast


@dataclass
class ClassifierTraining:
    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    num_classes: int
    normalize: Normalize  # images in [0, 1] -> network input
    augment: DifferentiableAugment | None  # per-image DSA while training, or none
    seed: int
    device: torch.device
    precision: str = "fp32"  # fp32, or bf16 autocast for the network passes
    compile: bool = False  # torch.compile the network (or the stacked networks) before training

    def with_images(self, images: torch.Tensor, labels: torch.Tensor) -> ClassifierTraining:
        return dataclasses.replace(self, images=images, labels=labels)


@dataclass
class TrainingStream:
    """One network's share of an epoch: its images (uint8, on the device), labels and random stream
    (data order and augmentation draws). Networks trained together each keep their own."""

    images: torch.Tensor
    labels: torch.Tensor
    generator: torch.Generator


def sgd_epoch(model: nn.Module | StackedNetworks, optimizer: torch.optim.Optimizer, streams: list[TrainingStream],
              batch_size: int, normalize: Normalize, augment: DifferentiableAugment | None, precision: str,
              on_batch: Callable[[], None] | None = None) -> torch.Tensor:
    """One epoch of cross-entropy training: one network and one stream, or a ``StackedNetworks`` and one
    stream per copy (each copy's loss is the mean over its batch, so its gradient is what it would be
    alone). Returns the last batch's loss per network. The experts of a buffer and the networks of an
    evaluation train with this one loop."""
    orders = [torch.randperm(len(stream.images), generator=stream.generator) for stream in streams]
    device = streams[0].images.device
    shared = all(stream.images is streams[0].images for stream in streams)
    loss = torch.zeros(len(streams))
    for start in range(0, len(orders[0]), batch_size):
        rows = [order[start : start + batch_size].to(device) for order in orders]
        if shared:  # experts: one gather and one normalisation for every copy's batch
            batches = list(normalize(streams[0].images[torch.cat(rows)].float() / 255).split([len(r) for r in rows]))
        else:
            batches = [normalize(stream.images[r].float() / 255) for stream, r in zip(streams, rows)]
        if augment is not None:
            draws = [augment.sample(len(r), stream.generator) for stream, r in zip(streams, rows)]
            batches = augment.apply_each(batches, draws) if len(streams) > 1 else [augment.apply(batches[0], draws[0])]
        targets = [stream.labels[r] for stream, r in zip(streams, rows)]
        with autocast(device, precision):
            if isinstance(model, StackedNetworks):
                logits = model(torch.stack(batches))
                per_network = F.cross_entropy(logits.flatten(0, 1).float(), torch.cat(targets), reduction="none")
                loss = per_network.view(len(streams), -1).mean(1)
            else:
                loss = F.cross_entropy(model(batches[0]), targets[0]).view(1)
        optimizer.zero_grad(set_to_none=True)
        loss.float().sum().backward()
        optimizer.step()
        if on_batch is not None:
            on_batch()
    return loss.detach().float()


def member_parameters(model: nn.Module | StackedNetworks, member: int) -> list[torch.Tensor]:
    """Network ``member``'s parameters (views into the stacked tensors of a ``StackedNetworks``)."""
    if isinstance(model, StackedNetworks):
        return [tensor[member] for tensor in model.parameters()]
    return list(model.parameters())
