"""What trains a classifier besides its hyper-parameters, as one object: the expert trainer (buffer) and the
evaluation protocol both take it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.runtime import Normalize


@dataclass
class ClassifierTraining:
    images: torch.Tensor  # (N, 3, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    num_classes: int
    normalize: Normalize  # images in [0, 1] -> network input
    augment: DifferentiableAugment | None  # per-image DSA while training, or none
    seed: int
    device: torch.device
    precision: str = "fp32"  # fp32, or bf16 autocast for the network passes

    def with_images(self, images: torch.Tensor, labels: torch.Tensor) -> ClassifierTraining:
        return dataclasses.replace(self, images=images, labels=labels)
