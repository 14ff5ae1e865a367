"""One registry of networks: ``build("resnet18", num_classes=10, resolution=32)`` builds any of them.

Every network takes ``(num_classes, in_channels, resolution, width, depth)``; ``width``/``depth`` 0
means the network's own default, so a name alone builds the standard model for an input size. Each
has ``embed(images)`` (the features before the classifier, for distribution matching) and
``forward``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from latentdistill.errors import LatentDistillError
from latentdistill.nets.alexnet import AlexNet
from latentdistill.nets.convnet import ConvNet
from latentdistill.nets.resnet import ResNet18
from latentdistill.nets.vgg import VGG11
from latentdistill.nets.vit import ViT


def _convnet_of_depth(fixed: int, **kwargs) -> ConvNet:
    if kwargs.get("depth") not in (None, 0, fixed):
        raise LatentDistillError(f"network 'convnet_d{fixed}' has depth {fixed}: use 'convnet' to choose the depth")
    return ConvNet(**{**kwargs, "depth": fixed})


NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "convnet": ConvNet,  # instance norm; depth by resolution unless given
    **{f"convnet_d{d}": partial(_convnet_of_depth, d) for d in (3, 4, 5, 6)},
    "convnet_bn": partial(ConvNet, norm="batch"),
    "alexnet": AlexNet,
    "vgg11": VGG11,  # instance norm
    "vgg11_bn": partial(VGG11, norm="batch"),
    "resnet18": ResNet18,  # instance norm
    "resnet18_bn": partial(ResNet18, norm="batch"),
    "vit": ViT,
}


def build(name: str, num_classes: int, resolution: int = 32, in_channels: int = 3, width: int = 0, depth: int = 0) -> nn.Module:
    """Build a network by name for ``resolution`` x ``resolution`` inputs."""
    if name not in NETWORKS:
        raise LatentDistillError(f"unknown network '{name}' (known: {', '.join(sorted(NETWORKS))})")
    return NETWORKS[name](num_classes=num_classes, in_channels=in_channels, resolution=resolution, width=width, depth=depth)


__all__ = ["NETWORKS", "VGG11", "AlexNet", "ConvNet", "ResNet18", "ViT", "build"]
