"""Objective ``dm``: distribution matching (Zhao & Bilen, "Dataset Condensation with Distribution
Matching", WACV 2023).

With ``distill.batched`` every class's real images go through the network in one forward and every
class's synthetic images in another (the reference loops over classes); the per-class means are then
taken from those two passes. Batch norm couples a batch's images, so a network with it keeps the loop.

Per class, the mean embedding of the real images and of the synthetic images under a randomly
initialised network's feature extractor should agree; the loss is the squared distance between the
two means, summed over classes. A new network every iteration, never trained: the set must match
the real distribution in many random feature spaces at once. One step per iteration.
"""

from __future__ import annotations

import torch
from torch import nn

from latentdistill.distill.augment import AugmentParams, DifferentiableAugment
from latentdistill.distill.objective import (
    OBJECTIVES,
    Criterion,
    IterationContext,
    ObjectiveSetup,
    class_pairs,
    stacked_classes,
)
from latentdistill.errors import LatentDistillError
from latentdistill.nets.stacked import can_stack
from latentdistill.runtime import autocast, use_batched


class DistributionMatching:
    name = "dm"

    def __init__(self, augment: DifferentiableAugment, criterion: Criterion, precision: str = "fp32",
                 batched: bool | str = False):
        self.augment = augment
        self.criterion = criterion
        self.precision = precision
        self.batched = batched

    def loss(self, net, real_by_class: dict[int, torch.Tensor], synthetic_by_class: dict[int, torch.Tensor],
             augment_params=None) -> torch.Tensor:
        """Sum over the classes in ``real_by_class`` of ``|mean embed(real) - mean embed(synthetic)|^2``,
        with one DSA draw per class shared by its real and synthetic images."""
        device = next(iter(synthetic_by_class.values())).device
        if use_batched(self.batched, device) and can_stack(net):
            return self.batched_loss(net, real_by_class, synthetic_by_class, augment_params)
        total = next(iter(synthetic_by_class.values())).new_zeros(())
        for _, real, syn in class_pairs(real_by_class, synthetic_by_class, self.augment, augment_params):
            with autocast(syn.device, self.precision):
                with torch.no_grad():
                    real_mean = self.criterion.embed(net, real).float().mean(0)
                syn_mean = self.criterion.embed(net, syn).float().mean(0)
            total = total + ((real_mean - syn_mean) ** 2).sum()
        return total

    def batched_loss(self, net: nn.Module, real_by_class: dict[int, torch.Tensor],
                     synthetic_by_class: dict[int, torch.Tensor], augment_params: AugmentParams | None = None) -> torch.Tensor:
        """``loss`` with one forward for all real images and one for all synthetic ones."""
        classes = list(real_by_class)
        real, real_labels = stacked_classes(real_by_class, self.augment, augment_params)
        syn, syn_labels = stacked_classes({c: synthetic_by_class[c] for c in classes}, self.augment, augment_params)
        with autocast(syn.device, self.precision):
            with torch.no_grad():
                real_features = self.criterion.embed(net, real).float().flatten(1)
            syn_features = self.criterion.embed(net, syn).float().flatten(1)
        real_means = _class_means(real_features, real_labels, classes)
        syn_means = _class_means(syn_features, syn_labels, classes)
        return ((real_means - syn_means) ** 2).sum()

    def iteration(self, context: IterationContext) -> list[float]:
        net = context.net
        for parameter in net.parameters():
            parameter.requires_grad_(False)
        real_batches = context.real_batches(context.generator)
        augment_params = self.augment.sample(context.num_classes, context.generator)
        loss = self.loss(net, real_batches, context.synthetic_batches(context.generator), augment_params)
        return [context.update(loss)]


def _class_means(features: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """(len(classes), D): the mean feature of each class, in ``classes`` order."""
    index = torch.empty(max(classes) + 1, dtype=torch.long, device=labels.device)
    index[torch.tensor(classes, device=labels.device)] = torch.arange(len(classes), device=labels.device)
    rows = index[labels]
    sums = features.new_zeros(len(classes), features.shape[1]).index_add(0, rows, features)
    counts = torch.bincount(rows, minlength=len(classes)).clamp(min=1).unsqueeze(1)
    return sums / counts


@OBJECTIVES.register("dm")
def build_distribution_matching(setup: ObjectiveSetup) -> DistributionMatching:
    if setup.settings.matching_nets != "fresh":  # DM's embeddings are those of untrained networks, by design
        raise LatentDistillError("config key 'distill.matching_nets': objective 'dm' embeds with fresh, untrained "
                                 "networks; matching on experts is for gm and pm")
    return DistributionMatching(setup.augment, setup.criterion, setup.precision, setup.settings.batched)
