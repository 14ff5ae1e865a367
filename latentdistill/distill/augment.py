"""Differentiable siamese augmentation (DSA, Zhao & Bilen 2021).

Augmentations are split into a parameter draw (``sample``) and its application (``apply``), so one
draw can be applied to a real batch and a synthetic batch alike: that is the "siamese" part, and it is
what lets gradient matching compare like with like. Parameters are per image; a per-class draw is
spread over a batch with ``AugmentParams.index(labels)``. Every operation is differentiable with
respect to the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from latentdistill.config import AugmentConfig
from latentdistill.errors import LatentDistillError

OPERATIONS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass
class AugmentParams:
    """One draw: which operations run, and per-image parameters for each."""

    operations: tuple[str, ...]
    values: dict[str, torch.Tensor]

    def index(self, rows: torch.Tensor) -> AugmentParams:
        return AugmentParams(self.operations, {k: v[rows] for k, v in self.values.items()})


class DifferentiableAugment:
    """DSA with the reference code's parameters.

    ``mode="single"`` (the reference default) runs one operation family, chosen at random per draw;
    ``mode="all"`` runs every family in the strategy, in order.
    """

    def __init__(self, config: AugmentConfig | None = None, mode: str = "single"):
        self.config = config or AugmentConfig()
        strategy = self.config.strategy.strip().lower()
        self.operations = tuple(op for op in strategy.split("_") if op) if strategy not in ("", "none") else ()
        unknown = [op for op in self.operations if op not in OPERATIONS]
        if unknown:
            raise LatentDistillError(
                f"config key 'augment.strategy': unknown operation '{unknown[0]}' (known: {'_'.join(OPERATIONS)})"
            )
        if mode not in ("single", "all"):
            raise LatentDistillError(f"unknown augmentation mode '{mode}' (single | all)")
        self.mode = mode

    @property
    def enabled(self) -> bool:
        return bool(self.operations)

    def sample(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        """Draw parameters for ``n`` images (or ``n`` classes, to be spread with ``index``)."""
        if not self.operations:
            return AugmentParams((), {})
        if self.mode == "single":
            choice = int(torch.randint(len(self.operations), (1,), generator=generator))
            operations: tuple[str, ...] = (self.operations[choice],)
        else:
            operations = self.operations
        c = self.config

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(n, *shape, generator=generator)

        values: dict[str, torch.Tensor] = {}
        for op in operations:
            if op == "color":
                values["brightness"] = (uniform() - 0.5) * c.brightness
                values["saturation"] = uniform() * c.saturation
                values["contrast"] = uniform() + c.contrast
            elif op == "crop":
                values["translate"] = (uniform(2) * 2 - 1) * c.crop
            elif op == "cutout":
                values["cutout_center"] = uniform(2)
            elif op == "flip":
                values["flip"] = (uniform() < 0.5).float()
            elif op == "scale":
                values["scale"] = uniform(2) * (c.scale - 1.0 / c.scale) + 1.0 / c.scale
            elif op == "rotate":
                values["rotate"] = (uniform() * 2 - 1) * c.rotate * math.pi / 180
        return AugmentParams(operations, values)

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply a draw; ``params`` holds one row per image of ``images``."""
        v = {k: t.to(images.device, images.dtype) for k, t in params.values.items()}
        for op in params.operations:
            if op == "color":
                images = images + v["brightness"].view(-1, 1, 1, 1)
                mean = images.mean(dim=1, keepdim=True)
                images = (images - mean) * v["saturation"].view(-1, 1, 1, 1) + mean
                mean = images.mean(dim=(1, 2, 3), keepdim=True)
                images = (images - mean) * v["contrast"].view(-1, 1, 1, 1) + mean
            elif op == "crop":
                images = _affine(images, _identity(len(images), images), v["translate"])
            elif op == "cutout":
                images = images * _cutout_mask(images, v["cutout_center"], self.config.cutout)
            elif op == "flip":
                flip = v["flip"].view(-1, 1, 1, 1)
                images = images * (1 - flip) + images.flip(3) * flip
            elif op == "scale":
                matrix = torch.diag_embed(v["scale"])
                images = _affine(images, matrix, None)
            elif op == "rotate":
                cos, sin = torch.cos(v["rotate"]), torch.sin(v["rotate"])
                matrix = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
                images = _affine(images, matrix, None)
        return images

    def apply_each(self, batches: list[torch.Tensor], draws: list[AugmentParams]) -> list[torch.Tensor]:
        """``apply`` each draw to its batch, with one call per distinct set of operations: the batches of
        networks trained together are augmented in one pass. Every operation acts per image, so this equals
        applying the draws one by one."""
        out: list[torch.Tensor | None] = [None] * len(batches)
        by_operations: dict[tuple[str, ...], list[int]] = {}
        for index, draw in enumerate(draws):
            by_operations.setdefault(draw.operations, []).append(index)
        for operations, members in by_operations.items():
            images = torch.cat([batches[i] for i in members])
            values = {key: torch.cat([draws[i].values[key] for i in members]) for key in draws[members[0]].values}
            augmented = self.apply(images, AugmentParams(operations, values))
            for i, part in zip(members, augmented.split([len(batches[i]) for i in members])):
                out[i] = part
        return out  # type: ignore[return-value]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Independent parameters per image: the augmentation used when training a network."""
        if not self.operations:
            return images
        return self.apply(images, self.sample(len(images), generator))


def _identity(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, dtype=like.dtype, device=like.device).expand(n, 2, 2)


def _affine(images: torch.Tensor, matrix: torch.Tensor, translate: torch.Tensor | None) -> torch.Tensor:
    """Resample with a per-image 2x2 matrix and translation (as a fraction of the image size)."""
    n = len(images)
    offset = torch.zeros(n, 2, 1, dtype=images.dtype, device=images.device)
    if translate is not None:
        offset = (translate * 2).unsqueeze(-1)  # grid coordinates span [-1, 1]: fraction * 2
    theta = torch.cat([matrix, offset], dim=2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _cutout_mask(images: torch.Tensor, centers: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero a square of ``ratio`` times the image side around each per-image center."""
    n, _, height, width = images.shape
    half_h, half_w = int(height * ratio + 0.5) / 2, int(width * ratio + 0.5) / 2
    ys = torch.arange(height, device=images.device, dtype=images.dtype).view(1, -1, 1)
    xs = torch.arange(width, device=images.device, dtype=images.dtype).view(1, 1, -1)
    cy = (centers[:, 0] * height).view(-1, 1, 1)
    cx = (centers[:, 1] * width).view(-1, 1, 1)
    inside = ((ys - cy).abs() < half_h) & ((xs - cx).abs() < half_w)
    return (~inside).to(images.dtype).unsqueeze(1)
