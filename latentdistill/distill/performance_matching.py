"""Objective ``pm``: performance matching (Wang et al., "Dataset Distillation", 2018; the name is the survey's,
Yu et al., "Dataset Distillation: A Comprehensive Review", TPAMI 2023).

A student takes ``syn_steps`` SGD steps on the synthetic set, with a learnable learning rate; the loss is
the task's loss of the student's end point on a batch of real data, differentiated through the steps. The
set is judged by what it teaches, not by how its gradients or features look.

From a fresh network this is the original bilevel method. With ``distill.matching_nets: experts`` the
student starts from a trained network (a random expert of ``buffer.dir`` at a random epoch of the window):
what the set must still teach a nearly converged network, which is what a converged protocol measures
(super-resolution, issue 15). The student's steps reuse trajectory matching's unrolled, optionally
recomputed, SGD.
"""

from __future__ import annotations

import torch
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from latentdistill.distill.buffer import (
    ExpertBuffer,
    ExpertDraws,
    StartWindow,
    expert_networks,
    parameter_layout,
    unflatten,
)
from latentdistill.distill.objective import OBJECTIVES, Criterion, IterationContext, ObjectiveSetup
from latentdistill.distill.trajectory_matching import student_steps
from latentdistill.runtime import autocast


class PerformanceMatching:
    name = "pm"

    def __init__(self, criterion: Criterion, precision: str = "fp32", syn_steps: int = 10, syn_batch: int = 0,
                 syn_lr: float = 0.01, steps_per_recompute: int = 0, experts: ExpertBuffer | None = None,
                 window: StartWindow | None = None):
        self.criterion, self.precision = criterion, precision
        self.syn_steps, self.syn_batch, self.steps_per_recompute = syn_steps, syn_batch, steps_per_recompute
        self.draws = ExpertDraws(experts, window or StartWindow(0, 1)) if experts is not None else None
        self.synthetic_lr = torch.tensor(float(syn_lr))  # learned with the images, as MTT's

    def learnable(self) -> dict[str, torch.Tensor]:
        return {"synthetic_lr": self.synthetic_lr}

    def start(self, context: IterationContext) -> torch.Tensor:
        """The student's first parameters, flat: a random expert's at a random epoch, or the fresh network's."""
        if self.draws is None:
            return torch.cat([p.detach().reshape(-1) for p in context.net.parameters()])
        return self.draws.draw(context.net, context.generator, context.iteration, context.iterations).to(context.device)

    def iteration(self, context: IterationContext) -> list[float]:
        generator, layout = context.generator, parameter_layout(context.net)
        images = context.generate()
        count = len(images)
        batch = self.syn_batch or count
        batches, order = [], torch.randperm(count, generator=generator)
        for _ in range(self.syn_steps):
            if len(order) < batch:
                order = torch.cat([order, torch.randperm(count, generator=generator)])
            batches.append(order[:batch].to(context.device))
            order = order[batch:]
        targets = context.synthetic_labels if context.synthetic_targets is None else context.synthetic_targets
        parameters = self.start(context).clone().requires_grad_(True)
        segment = self.steps_per_recompute or self.syn_steps
        no_augment = [None] * self.syn_steps
        for first in range(0, self.syn_steps, segment):
            arguments = (context.net, layout, parameters, images, targets, batches[first : first + segment],
                         no_augment[first : first + segment], self.synthetic_lr, None, self.criterion, self.precision)
            parameters = (checkpoint(student_steps, *arguments, use_reentrant=False) if self.steps_per_recompute
                          else student_steps(*arguments))
        real = context.real_batches(generator)
        real_images = torch.cat(list(real.values()))
        real_labels = torch.cat([torch.full((len(v),), c, dtype=torch.long) for c, v in real.items()]).to(real_images.device)
        weights = unflatten(parameters, layout)
        with autocast(real_images.device, self.precision):
            loss = self.criterion.loss(lambda x: functional_call(context.net, weights, (x,)).float(), real_images, real_labels)
        return [context.update(loss.float())]


@OBJECTIVES.register("pm")
def build_performance_matching(setup: ObjectiveSetup) -> PerformanceMatching:
    """Performance matching from fresh networks, or from the experts of ``buffer.dir``
    (``distill.matching_nets: experts``, the epochs ``[min_start_epoch, max_start_epoch)``)."""
    settings = setup.settings
    experts, window = expert_networks(setup)
    return PerformanceMatching(setup.criterion, setup.precision, settings.syn_steps, settings.syn_batch, settings.syn_lr,
                               settings.syn_steps_per_recompute, experts, window)
