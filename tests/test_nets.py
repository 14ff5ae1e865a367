"""The network registry: every network builds at 32x32 and at larger inputs, by name."""

import pytest
import torch

from latentdistill import nets
from latentdistill.errors import LatentDistillError

ISSUE_NETWORKS = ("convnet_d3", "convnet_d4", "convnet_d5", "convnet_d6", "alexnet", "vgg11", "vgg11_bn",
                  "resnet18", "resnet18_bn", "vit")


CLASSIFIERS = nets.names(task="classification")
SUPER_RESOLUTION = nets.names(task="sr")


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_network_builds_and_classifies(name, resolution):
    torch.manual_seed(0)
    net = nets.build(name, num_classes=7, resolution=resolution)
    images = torch.randn(2, 3, resolution, resolution)
    logits = net(images)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    embedding = net.embed(images)
    assert embedding.shape == (2, net.embedding_size)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_the_issue_networks_are_registered():
    assert set(ISSUE_NETWORKS) <= set(CLASSIFIERS)
    assert set(SUPER_RESOLUTION) == {"srcnn", "fsrcnn", "espcn", "edsr"}


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", SUPER_RESOLUTION)
def test_every_sr_network_upscales_by_its_scale(name, scale):
    torch.manual_seed(0)
    net = nets.build(name, scale=scale, task="sr")
    output = net(torch.rand(2, 3, 9, 11))
    assert output.shape == (2, 3, 9 * scale, 11 * scale) and torch.isfinite(output).all()
    output.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert net.features(torch.rand(2, 3, 9, 11)).dim() == 4  # what distribution matching compares


def test_convnet_depth_follows_the_resolution_and_the_name():
    def conv_layers(net):
        return sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())

    assert conv_layers(nets.build("convnet", 10, resolution=32)) == 3
    assert conv_layers(nets.build("convnet", 10, resolution=128)) == 5
    assert conv_layers(nets.build("convnet_d6", 10, resolution=32)) == 6
    assert conv_layers(nets.build("convnet", 10, resolution=32, depth=4)) == 4
    assert nets.build("convnet", 10, width=16).classifier.in_features == 16 * 4 * 4


def test_instance_and_batch_norm_variants_differ():
    assert any(isinstance(m, torch.nn.GroupNorm) for m in nets.build("resnet18", 10).modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in nets.build("resnet18_bn", 10).modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in nets.build("vgg11", 10).modules())


def test_resnet_stem_downsamples_only_larger_inputs():
    small, large = nets.build("resnet18", 10, resolution=32), nets.build("resnet18", 10, resolution=64)
    assert small.stem[0].stride == (1, 1)
    assert large.stem[0].stride == (2, 2)


def test_bad_names_and_depths_are_refused():
    with pytest.raises(LatentDistillError, match="unknown network 'resnet50'"):
        nets.build("resnet50", 10)
    with pytest.raises(LatentDistillError, match="unknown sr network 'convnet'"):
        nets.build("convnet", scale=2, task="sr")
    with pytest.raises(LatentDistillError, match="fixed depth"):
        nets.build("vgg11", 10, depth=13)
    with pytest.raises(LatentDistillError, match="convnet_d4"):
        nets.build("convnet_d4", 10, depth=3)
