"""One registry of networks: ``build("convnet", num_classes=10, resolution=32)`` builds any of them."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from latentdistill.errors import LatentDistillError
from latentdistill.nets.convnet import ConvNet

NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "convnet": ConvNet,
    "convnet_d3": lambda **kw: ConvNet(**{**kw, "depth": 3}),
    "convnet_d4": lambda **kw: ConvNet(**{**kw, "depth": 4}),
    "convnet_d5": lambda **kw: ConvNet(**{**kw, "depth": 5}),
    "convnet_d6": lambda **kw: ConvNet(**{**kw, "depth": 6}),
}


def build(name: str, **kwargs) -> nn.Module:
    """Build a network by name; keyword arguments go to its constructor."""
    if name not in NETWORKS:
        raise LatentDistillError(f"unknown network '{name}' (known: {', '.join(sorted(NETWORKS))})")
    return NETWORKS[name](**kwargs)


__all__ = ["NETWORKS", "ConvNet", "build"]
