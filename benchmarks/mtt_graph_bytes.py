"""What the autograd graph of an unrolled MTT student keeps between steps, with and without
``syn_steps_per_recompute`` (exact bytes, independent of the allocator):

    python benchmarks/mtt_graph_bytes.py --width 32 --images 20 --steps 10 20 40

Counts the bytes of every tensor saved for backward outside the checkpointed segments (a saved-tensors
hook around the student), using the student steps of objective ``mtt`` (``trajectory_matching.student_steps``).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.checkpoint import checkpoint

from latentdistill import nets
from latentdistill.config import AugmentConfig
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import flat_parameters, parameter_layout
from latentdistill.distill.trajectory_matching import student_steps
from latentdistill.tasks.classification import CrossEntropy


def saved_megabytes(steps: int, checkpointed: bool, width: int, images: int) -> float:
    torch.manual_seed(0)
    net = nets.build("convnet", 10, resolution=32, width=width)
    layout = parameter_layout(net)
    augment = DifferentiableAugment(AugmentConfig(strategy="none"))
    criterion = CrossEntropy()
    synthetic = torch.randn(images, 3, 32, 32, requires_grad=True)
    labels = torch.arange(10).repeat_interleave(images // 10)
    rows = [torch.arange(images)]
    lr = torch.tensor(0.01, requires_grad=True)
    sizes: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        sizes.append(tensor.numel() * tensor.element_size())
        return tensor

    parameters = flat_parameters(net).requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        for _ in range(steps):
            arguments = (net, layout, parameters, synthetic, labels, rows, [None], lr, augment, criterion)
            parameters = checkpoint(student_steps, *arguments, use_reentrant=False) if checkpointed else student_steps(*arguments)
    return sum(sizes) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40])
    args = parser.parse_args()
    print("| syn_steps | MB kept, every step | MB kept, checkpointed |\n|---|---|---|")
    for steps in args.steps:
        kept = saved_megabytes(steps, False, args.width, args.images)
        checkpointed = saved_megabytes(steps, True, args.width, args.images)
        print(f"| {steps} | {kept:.1f} | {checkpointed:.1f} |", flush=True)


if __name__ == "__main__":
    main()
