"""Objective ``gm``: gradient matching (Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient
Matching", ICLR 2021).

For each class, a network's loss gradient on a real batch and on the synthetic images of that class
should point the same way. The distance sums, over layers, ``1 - cosine`` per output unit (a conv
kernel's gradient flattened per output channel); 1-D parameters (biases, norm scales) count zero, as
in the reference code. Each iteration alternates matching steps on one network (outer loop) with
training that network on the synthetic set (inner loop), as in DC.

The reference computes the gradients class by class, a Python loop that leaves a GPU idle between small
kernels. With ``distill.batched`` every class's real and synthetic gradients come from one batched
computation: ``torch.func.vmap`` over classes of ``torch.func.grad`` of a ``functional_call`` (the
synthetic side differentiable, so the outer backward reaches the latents), with each class's DSA draw
applied to all images in one pass. The inner loop already trains on batches of every class at once.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.utils import vector_to_parameters

from latentdistill.distill.augment import AugmentParams, DifferentiableAugment
from latentdistill.distill.buffer import ExpertBuffer, ExpertDraws, StartWindow, expert_networks
from latentdistill.distill.objective import (
    OBJECTIVES,
    Criterion,
    IterationContext,
    ObjectiveSetup,
    class_pairs,
    stacked_classes,
)
from latentdistill.nets.stacked import can_stack
from latentdistill.runtime import autocast, use_batched

# DC's (outer, inner) loop lengths by images per class.
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def loop_lengths(ipc: int, outer: int, inner: int) -> tuple[int, int]:
    default_outer, default_inner = DC_LOOPS.get(ipc, DC_LOOPS[min(DC_LOOPS, key=lambda k: abs(k - ipc))])
    return outer or default_outer, inner or default_inner


def gradient_distance(real: list[torch.Tensor], synthetic: list[torch.Tensor], leading: int = 0) -> torch.Tensor:
    """Sum over layers and output units of ``1 - cos(real, synthetic)``; ``leading`` dimensions (the
    classes of the batched path) come before each parameter's own and are summed over too."""
    total = synthetic[0].new_zeros(())
    for g_real, g_syn in zip(real, synthetic):
        if g_syn.dim() - leading == 1:
            continue
        g_real = g_real.reshape(*g_real.shape[: leading + 1], -1)
        g_syn = g_syn.reshape(*g_syn.shape[: leading + 1], -1)
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
                 outer_loop: int = 1, inner_loop: int = 1, inner_lr: float = 0.01, inner_batch: int = 256,
                 batched: bool | str = False, experts: ExpertBuffer | None = None, window: StartWindow | None = None):
        self.batched = batched
        # Matching on trained networks: each iteration's network is a random expert's at a random epoch.
        self.draws = ExpertDraws(experts, window or StartWindow(0, 1)) if experts is not None else None
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
        device = next(iter(synthetic_by_class.values())).device
        # Gradient matching differentiates gradients: the fused attention kernels (flash, memory-efficient)
        # have no double backward, the math kernel has, and a matching network's attention is small.
        with sdpa_kernel([SDPBackend.MATH]):
            if use_batched(self.batched, device) and can_stack(net):
                return self.batched_loss(net, real_by_class, synthetic_by_class, augment_params)
            total = next(iter(synthetic_by_class.values())).new_zeros(())
            for label, real, syn in class_pairs(real_by_class, synthetic_by_class, self.augment, augment_params):
                g_real = self.class_gradients(net, real, label, create_graph=False)
                g_syn = self.class_gradients(net, syn, label, create_graph=True)
                total = total + gradient_distance(g_real, g_syn)
            return total

    def batched_loss(
        self,
        net: nn.Module,
        real_by_class: dict[int, torch.Tensor],
        synthetic_by_class: dict[int, torch.Tensor],
        augment_params: AugmentParams | None = None,
    ) -> torch.Tensor:
        """``loss`` with every class's gradients from one vmapped computation per batch shape (classes whose
        real or synthetic batches differ in size, SR pseudo-classes with few patches, form their own group)."""
        real, _ = stacked_classes(real_by_class, self.augment, augment_params)
        syn, _ = stacked_classes({c: synthetic_by_class[c] for c in real_by_class}, self.augment, augment_params)
        real_parts = dict(zip(real_by_class, real.split([len(v) for v in real_by_class.values()])))
        syn_parts = dict(zip(real_by_class, syn.split([len(synthetic_by_class[c]) for c in real_by_class])))
        groups: dict[tuple[int, int], list[int]] = {}
        for label in real_by_class:
            groups.setdefault((len(real_parts[label]), len(syn_parts[label])), []).append(label)
        params = {name: p.detach() for name, p in net.named_parameters() if p.requires_grad}

        def loss(values: dict[str, torch.Tensor], images: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            with self.autocast(images.device):
                value = self.criterion.loss(lambda x: functional_call(net, values, (x,)), images, label.expand(len(images)))
            return value.float()

        per_class_gradients = vmap(grad(loss), in_dims=(None, 0, 0))
        total = syn.new_zeros(())
        for labels in groups.values():
            targets = torch.tensor(labels, device=syn.device)
            with torch.no_grad():
                g_real = per_class_gradients(params, torch.stack([real_parts[c] for c in labels]), targets)
            g_syn = per_class_gradients(params, torch.stack([syn_parts[c] for c in labels]), targets)
            total = total + gradient_distance(list(g_real.values()), list(g_syn.values()), leading=1)
        return total

    def load_expert(self, context: IterationContext) -> None:
        """Set ``context.net`` to a random expert's parameters at a random epoch of the window."""
        row = self.draws.draw(context.net, context.generator, context.iteration, context.iterations)
        with torch.no_grad():
            # a copy: the inner loop trains the network in place, and the cached trajectory must not move with it
            vector_to_parameters(row.to(context.device, copy=True), context.net.parameters())

    def iteration(self, context: IterationContext) -> list[float]:
        if self.draws is not None:
            self.load_expert(context)
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
    experts, window = expert_networks(setup)
    return GradientMatching(setup.augment, setup.criterion, setup.precision, outer, inner, settings.inner_lr,
                            settings.inner_batch, settings.batched, experts, window)
