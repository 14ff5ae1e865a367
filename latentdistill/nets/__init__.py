"""One registry of networks: ``build("resnet18", num_classes=10, resolution=32)`` or
``build("fsrcnn", scale=2, task="sr")`` builds any of them.

Classifiers (tag ``task="classification"``) take ``(num_classes, in_channels, resolution, width, depth)``
and have ``embed(images)`` (the features before the classifier, for distribution matching) and
``forward``. Super-resolution networks (``task="sr"``) take ``(scale, channels, width, depth)``, map LR
to HR images and have ``features(lr)``. ``width``/``depth`` 0 means the network's own default, so a name
alone builds the standard model. Your own network: ``@NETWORKS.register("mynet", task="classification")``
above its class, in a module the run imports (config key ``imports``).
"""

from __future__ import annotations

from functools import partial

from torch import nn

from latentdistill.errors import LatentDistillError
from latentdistill.nets.alexnet import AlexNet
from latentdistill.nets.convnet import ConvNet
from latentdistill.nets.resnet import ResNet18
from latentdistill.nets.super_resolution import EDSR, ESPCN, FSRCNN, SRCNN
from latentdistill.nets.vgg import VGG11
from latentdistill.nets.vit import ViT
from latentdistill.registry import Registry

NETWORKS = Registry("network")


def _convnet_of_depth(fixed: int, *args, **kwargs) -> ConvNet:
    if kwargs.get("depth") not in (None, 0, fixed):
        raise LatentDistillError(f"network 'convnet_d{fixed}' has depth {fixed}: use 'convnet' to choose the depth")
    return ConvNet(*args, **{**kwargs, "depth": fixed})


for _name, _builder in {
    "convnet": ConvNet,  # instance norm; depth by resolution unless given
    **{f"convnet_d{d}": partial(_convnet_of_depth, d) for d in (3, 4, 5, 6)},
    "convnet_bn": partial(ConvNet, norm="batch"),
    "alexnet": AlexNet,
    "vgg11": VGG11,  # instance norm
    "vgg11_bn": partial(VGG11, norm="batch"),
    "resnet18": ResNet18,  # instance norm
    "resnet18_bn": partial(ResNet18, norm="batch"),
    "vit": ViT,
}.items():
    NETWORKS.register(_name, _builder, task="classification")
for _name, _builder in {"srcnn": SRCNN, "fsrcnn": FSRCNN, "espcn": ESPCN, "edsr": EDSR}.items():  # EDSR-baseline, small
    NETWORKS.register(_name, _builder, task="sr")


def register(name: str, task: str = "classification"):
    """``@nets.register("mynet")`` above a network class: the decorator for user code."""
    return NETWORKS.register(name, task=task)


def build(name: str, *args, task: str | None = None, config_key: str | None = None, **kwargs) -> nn.Module:
    """Build a network by name; ``task`` ("classification" | "sr"), when given, must match it;
    ``config_key`` names the key that chose it in the error for an unknown name."""
    if name not in NETWORKS or (task is not None and NETWORKS.tags(name).get("task") != task):
        known = NETWORKS.names(**({"task": task} if task else {}))
        where = f"config key '{config_key}': " if config_key else ""
        raise LatentDistillError(f"{where}unknown {task + ' ' if task else ''}network '{name}' (known: {', '.join(known)})")
    return NETWORKS.build(name, *args, **kwargs)


def names(task: str | None = None) -> list[str]:
    return NETWORKS.names(**({"task": task} if task else {}))


__all__ = ["NETWORKS", "VGG11", "AlexNet", "ConvNet", "ResNet18", "ViT", "build", "names", "register"]
