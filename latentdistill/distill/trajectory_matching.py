"""Objective ``mtt``: matching training trajectories (Cazenavette et al., "Dataset Distillation by
Matching Training Trajectories", CVPR 2022).

From a random expert's parameters at a random epoch, a student takes ``syn_steps`` SGD steps on the
synthetic images, with a learnable learning rate; its end point should land where the expert was
``expert_epochs`` later. The loss is normalised by how far the expert itself moved:
``|student - expert_later|^2 / |expert_start - expert_later|^2``.

DATM's additions (Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory
Matching", ICLR 2024): the start epoch is drawn from a window ``[min_start_epoch, upper)`` whose upper bound
grows from ``max_start_epoch`` to ``max_start_epoch_final`` (easy, early trajectories first), and the student
may train on learned soft labels (the loop owns them; the student sees ``context.synthetic_targets``).

The unrolled student keeps every step's graph. With ``steps_per_recompute`` > 0 each segment of
steps is recomputed in the backward pass, so what is kept grows with one parameter vector per step
rather than with every step's activations.
"""

from __future__ import annotations

import torch
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import (
    ExpertBuffer,
    StartWindow,
    check_start_window,
    load_checked_buffer,
    parameter_layout,
    unflatten,
)
from latentdistill.distill.objective import OBJECTIVES, Criterion, IterationContext, ObjectiveSetup
from latentdistill.errors import LatentDistillError
from latentdistill.runtime import autocast


def student_steps(net, layout, parameters: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                  batches: list[torch.Tensor], draws: list, synthetic_lr: torch.Tensor,
                  augment: DifferentiableAugment, criterion: Criterion, precision: str = "fp32") -> torch.Tensor:
    """Plain SGD steps of a student (``net`` as the architecture, ``parameters`` flat) on the task's loss,
    one per batch of rows, differentiable in the images, the start and the learning rate."""
    if not parameters.requires_grad:
        parameters = parameters.requires_grad_(True)
    for rows, draw in zip(batches, draws):
        batch = images[rows]
        if draw is not None:
            batch = augment.apply(batch, draw)
        weights = unflatten(parameters, layout)
        with autocast(images.device, precision):
            loss = criterion.loss(lambda x, weights=weights: functional_call(net, weights, (x,)).float(), batch, labels[rows])
        (gradient,) = torch.autograd.grad(loss, parameters, create_graph=True)
        parameters = parameters - synthetic_lr * gradient
    return parameters


class TrajectoryMatching:
    name = "mtt"

    def __init__(self, augment: DifferentiableAugment, criterion: Criterion, buffer: ExpertBuffer, precision: str = "fp32",
                 syn_steps: int = 20, expert_epochs: int = 2, max_start_epoch: int = 10, syn_batch: int = 0,
                 syn_lr: float = 0.01, steps_per_recompute: int = 0, window: StartWindow | None = None):
        self.window = window or StartWindow(0, max_start_epoch)
        last_start = self.window.last_start
        if last_start + expert_epochs > buffer.epochs:
            raise LatentDistillError(
                f"config keys 'distill.expert_epochs' + the last start epoch (from 'distill.max_start_epoch' or "
                f"'distill.max_start_epoch_final') = {expert_epochs + last_start} exceed the {buffer.epochs} epochs "
                f"recorded in the buffer {buffer.directory}")
        self.augment, self.criterion, self.buffer, self.precision = augment, criterion, buffer, precision
        self.syn_steps, self.expert_epochs = syn_steps, expert_epochs
        self.syn_batch, self.steps_per_recompute = syn_batch, steps_per_recompute
        # The student's learning rate is learned with the images (MTT); the loop optimises it.
        self.synthetic_lr = torch.tensor(float(syn_lr))
        self._trajectories: dict[int, torch.Tensor] = {}

    def learnable(self) -> dict[str, torch.Tensor]:
        return {"synthetic_lr": self.synthetic_lr}

    def _trajectory(self, index: int) -> torch.Tensor:
        if index not in self._trajectories:
            self._trajectories[index] = self.buffer.trajectory(index)
        return self._trajectories[index]

    def iteration(self, context: IterationContext) -> list[float]:
        generator, device = context.generator, context.device
        layout = parameter_layout(context.net)
        expert = int(torch.randint(len(self.buffer.files), (1,), generator=generator))
        low, high = self.window.bounds(context.iteration, context.iterations)
        start_epoch = int(torch.randint(low, high, (1,), generator=generator))
        trajectory = self._trajectory(expert)
        if trajectory.shape[1] != sum(torch.Size(shape).numel() for _, shape in layout):
            raise LatentDistillError(f"expert buffer {self.buffer.directory} was trained on another network than distill.net")
        start = trajectory[start_epoch].to(device)
        target = trajectory[start_epoch + self.expert_epochs].to(device)

        images = context.generate()
        count = len(images)
        batch = self.syn_batch or count
        batches, draws = [], []
        order = torch.randperm(count, generator=generator)
        for _ in range(self.syn_steps):
            if len(order) < batch:
                order = torch.cat([order, torch.randperm(count, generator=generator)])
            rows, order = order[:batch].to(device), order[batch:]
            batches.append(rows)
            draws.append(self.augment.sample(len(rows), generator) if self.augment.enabled else None)

        parameters = start.clone().requires_grad_(True)
        segment = self.steps_per_recompute or self.syn_steps
        for first in range(0, self.syn_steps, segment):
            span = slice(first, first + segment)
            targets = context.synthetic_labels if context.synthetic_targets is None else context.synthetic_targets
            arguments = (context.net, layout, parameters, images, targets, batches[span], draws[span],
                         self.synthetic_lr, self.augment, self.criterion, self.precision)
            if self.steps_per_recompute:
                parameters = checkpoint(student_steps, *arguments, use_reentrant=False)
            else:
                parameters = student_steps(*arguments)
        loss = ((parameters - target) ** 2).sum() / ((start - target) ** 2).sum()
        return [context.update(loss)]


@OBJECTIVES.register("mtt")
def build_trajectory_matching(setup: ObjectiveSetup) -> TrajectoryMatching:
    """Trajectory matching against the expert buffer in ``setup.buffer_dir``, which must have been trained
    on the network (and resolution) this run matches through."""
    settings = setup.settings
    buffer = load_checked_buffer(setup.buffer_dir, setup.buffer_expects)
    window = check_start_window(settings)
    return TrajectoryMatching(setup.augment, setup.criterion, buffer, setup.precision, settings.syn_steps,
                              settings.expert_epochs, settings.max_start_epoch, settings.syn_batch, settings.syn_lr,
                              settings.syn_steps_per_recompute, window)
