"""Objective ``gm``: gradient matching (Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient
Matching", ICLR 2021).

For each class, a network's loss gradient on a real batch and on the synthetic images of that class
should point the same way. The distance sums, over layers, ``1 - cosine`` per output unit (a conv
kernel's gradient flattened per output channel); 1-D parameters (biases, norm scales) count zero, as
in the reference code. Each iteration alternates matching steps on one network (outer loop) with
training that network on the synthetic set (inner loop), as in DC.
"""

from __future__ import annotations

import torch
from torch import nn

from latentdistill.distill.augment import AugmentParams, DifferentiableAugment
from latentdistill.distill.objective import OBJECTIVES, Criterion, IterationContext, ObjectiveSetup, class_pairs
from latentdistill.runtime import autocast

# DC's (outer, inner) loop lengths by images per class.
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def loop_lengths(ipc: int, outer: int, inner: int) -> tuple[int, int]:
    default_outer, default_inner = DC_LOOPS.get(ipc, DC_LOOPS[min(DC_LOOPS, key=lambda k: abs(k - ipc))])
    return outer or default_outer, inner or default_inner


def gradient_distance(real: list[torch.Tensor], synthetic: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers and output units of ``1 - cos(real, synthetic)``."""
    total = synthetic[0].new_zeros(())
    for g_real, g_syn in zip(real, synthetic):
        if g_syn.dim() == 1:
            continue
        g_real = g_real.reshape(g_real.shape[0], -1)
        g_syn = g_syn.reshape(g_syn.shape[0], -1)
        cosine = (g_real * g_syn).sum(-1) / (g_real.norm(dim=-1) * g_syn.norm(dim=-1) + 1e-6)
        total = total + (1 - cosine).sum()
    return total


class GradientMatching:
    """Per-class gradient matching on one network, of the task's loss (``criterion``).

    ``precision="bf16"`` runs the network passes under bfloat16 autocast (2x faster on CPUs with
    AVX512-BF16 and on GPUs); parameters, gradients and the distance stay float32.
    """

    name = "gm"

    def __init__(self, augment: DifferentiableAugment, criterion: Criterion, precision: str = "fp32",
                 outer_loop: int = 1, inner_loop: int = 1, inner_lr: float = 0.01, inner_batch: int = 256):
        self.augment = augment
        self.criterion = criterion
        self.precision = precision
        self.outer_loop, self.inner_loop = outer_loop, inner_loop
        self.inner_lr, self.inner_batch = inner_lr, inner_batch

    def autocast(self, device: torch.device):
        return autocast(device, self.precision)

    def class_gradients(
        self, net: nn.Module, images: torch.Tensor, label: int, create_graph: bool
    ) -> list[torch.Tensor]:
        params = [p for p in net.parameters() if p.requires_grad]
        targets = torch.full((len(images),), label, dtype=torch.long, device=images.device)
        with self.autocast(images.device):
            loss = self.criterion.loss(net, images, targets)
        gradients = torch.autograd.grad(loss.float(), params, create_graph=create_graph)
        return [g if create_graph else g.detach() for g in gradients]

    def loss(
        self,
        net: nn.Module,
        real_by_class: dict[int, torch.Tensor],
        synthetic_by_class: dict[int, torch.Tensor],
        augment_params: AugmentParams | None = None,
    ) -> torch.Tensor:
        """Summed distance over the classes in ``real_by_class``.

        ``augment_params`` holds one DSA draw per class (row = class index), applied to that class's
        real and synthetic images alike.
        """
        total = next(iter(synthetic_by_class.values())).new_zeros(())
        for label, real, syn in class_pairs(real_by_class, synthetic_by_class, self.augment, augment_params):
            g_real = self.class_gradients(net, real, label, create_graph=False)
            g_syn = self.class_gradients(net, syn, label, create_graph=True)
            total = total + gradient_distance(g_real, g_syn)
        return total

    def iteration(self, context: IterationContext) -> list[float]:
        net, generator, labels = context.net, context.generator, context.synthetic_labels
        net_optimizer = torch.optim.SGD(net.parameters(), lr=self.inner_lr)
        losses = []
        for outer in range(self.outer_loop):
            real_batches = context.real_batches(generator)
            augment_params = self.augment.sample(context.num_classes, generator)
            synthetic = context.synthetic_batches(generator)
            losses.append(context.update(self.loss(net, real_batches, synthetic, augment_params)))
            if outer == self.outer_loop - 1:
                break
            # Inner loop: train the network on the (fixed) synthetic images, with per-image DSA.
            with torch.no_grad():
                training_images = context.generate()
            for _ in range(self.inner_loop):
                order = torch.randperm(len(training_images), generator=generator)
                for start in range(0, len(order), self.inner_batch):
                    rows = order[start : start + self.inner_batch].to(context.device)
                    batch = self.augment.apply(training_images[rows], self.augment.sample(len(rows), generator))
                    with self.autocast(context.device):
                        net_loss = self.criterion.loss(net, batch, labels[rows])
                    net_optimizer.zero_grad()
                    net_loss.float().backward()
                    net_optimizer.step()
        return losses


@OBJECTIVES.register("gm")
def build_gradient_matching(setup: ObjectiveSetup) -> GradientMatching:
    settings = setup.settings
    outer, inner = loop_lengths(settings.ipc, settings.outer_loop, settings.inner_loop)
    return GradientMatching(setup.augment, setup.criterion, setup.precision, outer, inner, settings.inner_lr,
                            settings.inner_batch)
