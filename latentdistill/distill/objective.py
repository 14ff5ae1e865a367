"""What an objective sees of one distillation iteration, and the registry of objectives.

The loop owns the synthetic tensors, their optimiser, checkpoints and logging; an objective owns
what one iteration does with a fresh network: how many matching steps, what loss, and whether the
network trains in between. It calls ``context.update(loss)`` for each step on the synthetic set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from latentdistill.distill.augment import DifferentiableAugment


@dataclass
class IterationContext:
    net: nn.Module  # a freshly initialised network, seeded by (seed, iteration)
    generator: torch.Generator  # the iteration's random stream (real batches, augmentation draws)
    generate: Callable[[], torch.Tensor]  # decode the synthetic set now: normalised images, differentiable
    real_batches: Callable[[torch.Generator], dict[int, torch.Tensor]]  # one real batch per class of this process
    update: Callable[[torch.Tensor], float]  # backward + step on the synthetic tensors; returns the summed loss
    synthetic_labels: torch.Tensor
    num_classes: int
    augment: DifferentiableAugment
    device: torch.device



def class_pairs(real_by_class: dict[int, torch.Tensor], synthetic: torch.Tensor, synthetic_labels: torch.Tensor,
                augment: DifferentiableAugment, augment_params=None):
    """Yield ``(label, real, synthetic)`` per class, with that class's DSA draw (row = class index of
    ``augment_params``) applied to its real and synthetic images alike: the siamese part of DSA that
    every per-class objective shares."""
    for label, real in real_by_class.items():
        syn = synthetic[synthetic_labels == label]
        if augment_params is not None and augment.enabled:
            real = augment.apply(real, augment_params.index(torch.full((len(real),), label)))
            syn = augment.apply(syn, augment_params.index(torch.full((len(syn),), label)))
        yield label, real, syn
