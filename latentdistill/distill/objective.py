"""What an objective sees of one distillation iteration, what it is built from, and the registry of
objectives.

The loop owns the synthetic tensors, their optimiser, checkpoints and logging; an objective owns
what one iteration does with a fresh network: how many matching steps, what loss, and whether the
network trains in between. It calls ``context.update(loss)`` for each step on the synthetic set.
What the networks are trained for comes from the task as a ``Criterion`` (cross-entropy for
classification, the reconstruction loss for super-resolution), so one objective serves every task.

Your own objective: a builder ``(ObjectiveSetup) -> objective`` registered with
``@OBJECTIVES.register("name")``; the objective has ``iteration(context) -> list[float]`` and, when it
learns tensors of its own (MTT's learning rate), ``learnable() -> dict[str, Tensor]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from latentdistill.config import DistillConfig
from latentdistill.distill.augment import AugmentParams, DifferentiableAugment
from latentdistill.registry import Registry

OBJECTIVES = Registry("objective", "distill.objective")


class Criterion(Protocol):
    """The task's side of matching: the loss its networks train on, and the features DM compares."""

    def loss(self, net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    def embed(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor: ...


@dataclass
class ObjectiveSetup:
    """What every objective is built from: its config section and the parts the run chose for it."""

    settings: DistillConfig
    augment: DifferentiableAugment
    criterion: Criterion
    precision: str = "fp32"
    buffer_dir: Path | None = None  # the expert buffer, for trajectory matching
    buffer_expects: dict | None = None  # what the buffer's experts must have been trained as


def build_objective(setup: ObjectiveSetup):
    return OBJECTIVES.build(setup.settings.objective, setup)


@dataclass
class IterationContext:
    net: nn.Module  # a freshly initialised network, seeded by (seed, iteration)
    generator: torch.Generator  # the iteration's random stream (real batches, augmentation draws)
    generate: Callable[[], torch.Tensor]  # decode the whole synthetic set now: network inputs, differentiable
    real_batches: Callable[[torch.Generator], dict[int, torch.Tensor]]  # one real batch per class of this process
    # The synthetic images of each class of this process, differentiable: all of them, or a drawn batch
    # of them when the task asks for it (SR sets are large).
    synthetic_batches: Callable[[torch.Generator], dict[int, torch.Tensor]]
    update: Callable[[torch.Tensor], float]  # backward + step on the synthetic tensors; returns the summed loss
    synthetic_labels: torch.Tensor
    num_classes: int
    device: torch.device
    # What a student trains the synthetic images towards: the class labels, or with learned soft labels the
    # softmax of their logits (N, classes), differentiable in them.
    synthetic_targets: torch.Tensor | None = None
    iteration: int = 0  # this iteration's index, of
    iterations: int = 1  # the run's iterations (schedules, such as DATM's growing window)


def stacked_classes(by_class: dict[int, torch.Tensor], augment: DifferentiableAugment,
                    augment_params: AugmentParams | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every class's images as one batch (in the dict's class order) with each image's class, and that
    class's DSA draw applied in one pass: ``class_pairs`` for the batched paths."""
    labels = torch.cat([torch.full((len(images),), label, dtype=torch.long) for label, images in by_class.items()])
    images = torch.cat(list(by_class.values()))
    if augment_params is not None and augment.enabled:
        images = augment.apply(images, augment_params.index(labels))
    return images, labels.to(images.device)


def class_pairs(real_by_class: dict[int, torch.Tensor], synthetic_by_class: dict[int, torch.Tensor],
                augment: DifferentiableAugment, augment_params: AugmentParams | None = None
                ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(label, real, synthetic)`` per class, with that class's DSA draw (row = class index of
    ``augment_params``) applied to its real and synthetic images alike: the siamese part of DSA that
    every per-class objective shares."""
    for label, real in real_by_class.items():
        syn = synthetic_by_class[label]
        if augment_params is not None and augment.enabled:
            real = augment.apply(real, augment_params.index(torch.full((len(real),), label)))
            syn = augment.apply(syn, augment_params.index(torch.full((len(syn),), label)))
        yield label, real, syn
