"""What a student step does to a trained SR expert: the real-patch L1 of an expert of an SR buffer at a few
epochs, and after 10 plain SGD steps on real training patches at a few learning rates. Performance matching
(objective pm with distill.matching_nets=experts) starts its student there, so its distill.syn_lr must be one
whose steps still lower the real loss; training patches only, no test image.

    python benchmarks/sr_student_lr.py configs/sr_x2_matching.yaml outputs/buffers/<the buffer>
"""

from __future__ import annotations

import sys

import torch
from torch.func import functional_call

from latentdistill import nets
from latentdistill.config import load_config
from latentdistill.distill.buffer import load_buffer, parameter_layout, unflatten
from latentdistill.tasks.sr_matching import Reconstruction
from latentdistill.tasks.super_resolution import SuperResolutionTask


def main(config_path: str, buffer_dir: str, rates=(0.001, 0.01, 0.05), steps: int = 10) -> None:
    config = load_config(config_path, [])
    patches = SuperResolutionTask(config).training_patches()
    buffer = load_buffer(buffer_dir)
    net = nets.build(buffer.meta["net"], scale=buffer.meta["scale"], task="sr")
    layout, criterion = parameter_layout(net), Reconstruction(buffer.meta["scale"])
    generator = torch.Generator().manual_seed(0)
    real = patches[torch.randint(len(patches), (320,), generator=generator)].float() / 255

    def real_loss(flat: torch.Tensor) -> float:
        with torch.no_grad():
            return float(criterion.loss(lambda x: functional_call(net, unflatten(flat, layout), (x,)), real))

    trajectory = buffer.trajectory(0)
    print("| expert epoch | real L1 | " + " | ".join(f"after {steps} SGD steps at lr {r}" for r in rates) + " |")
    print("|---|---|" + "---|" * len(rates))
    for epoch in sorted({2, buffer.epochs // 2, buffer.epochs}):
        cells = [f"{real_loss(trajectory[epoch]):.4f}"]
        for rate in rates:
            flat = trajectory[epoch].clone()
            for _ in range(steps):
                batch = patches[torch.randint(len(patches), (32,), generator=generator)].float() / 255
                flat.requires_grad_(True)
                loss = criterion.loss(lambda x: functional_call(net, unflatten(flat, layout), (x,)), batch)
                (gradient,) = torch.autograd.grad(loss, flat)
                flat = (flat - rate * gradient).detach()
            cells.append(f"{real_loss(flat):.4f}")
        print(f"| {epoch} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
