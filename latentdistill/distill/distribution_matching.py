"""Objective ``dm``: distribution matching (Zhao & Bilen, "Dataset Condensation with Distribution
Matching", WACV 2023).

Per class, the mean embedding of the real images and of the synthetic images under a randomly
initialised network's feature extractor should agree; the loss is the squared distance between the
two means, summed over classes. A new network every iteration, never trained: the set must match
the real distribution in many random feature spaces at once. One step per iteration.
"""

from __future__ import annotations

import torch

from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.objective import OBJECTIVES, Criterion, IterationContext, ObjectiveSetup, class_pairs
from latentdistill.runtime import autocast


class DistributionMatching:
    name = "dm"

    def __init__(self, augment: DifferentiableAugment, criterion: Criterion, precision: str = "fp32"):
        self.augment = augment
        self.criterion = criterion
        self.precision = precision

    def loss(self, net, real_by_class: dict[int, torch.Tensor], synthetic_by_class: dict[int, torch.Tensor],
             augment_params=None) -> torch.Tensor:
        """Sum over the classes in ``real_by_class`` of ``|mean embed(real) - mean embed(synthetic)|^2``,
        with one DSA draw per class shared by its real and synthetic images."""
        total = next(iter(synthetic_by_class.values())).new_zeros(())
        for _, real, syn in class_pairs(real_by_class, synthetic_by_class, self.augment, augment_params):
            with autocast(syn.device, self.precision):
                with torch.no_grad():
                    real_mean = self.criterion.embed(net, real).float().mean(0)
                syn_mean = self.criterion.embed(net, syn).float().mean(0)
            total = total + ((real_mean - syn_mean) ** 2).sum()
        return total

    def iteration(self, context: IterationContext) -> list[float]:
        net = context.net
        for parameter in net.parameters():
            parameter.requires_grad_(False)
        real_batches = context.real_batches(context.generator)
        augment_params = self.augment.sample(context.num_classes, context.generator)
        loss = self.loss(net, real_batches, context.synthetic_batches(context.generator), augment_params)
        return [context.update(loss)]


@OBJECTIVES.register("dm")
def build_distribution_matching(setup: ObjectiveSetup) -> DistributionMatching:
    return DistributionMatching(setup.augment, setup.criterion, setup.precision)
