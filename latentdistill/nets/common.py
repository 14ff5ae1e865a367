"""Pieces the networks share: the normalisation layers by name, and the depth a resolution needs."""

from __future__ import annotations

import math

from torch import nn

from latentdistill.errors import LatentDistillError

NORMS = ("instance", "batch", "none")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """Instance norm is GroupNorm with one group per channel (affine, as in DC's code); it couples no
    images of a batch, so a class's gradient does not depend on which other images share its batch."""
    if norm == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise LatentDistillError(f"unknown norm '{norm}' (known: {', '.join(NORMS)})")


def halvings(resolution: int) -> int:
    """How many times ``resolution`` halves down to 32 (0 at 32, 1 at 64, 3 at 256)."""
    return max(0, round(math.log2(max(resolution, 1) / 32)))


def fixed_depth(name: str, depth: int) -> None:
    if depth:
        raise LatentDistillError(f"network '{name}' has a fixed depth: leave its depth at 0")
