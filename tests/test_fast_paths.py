"""The batched paths give what the reference loops give: per-class gradient matching and distribution matching,
experts trained together and evaluation runs trained together, on tiny data through the real code."""

import json

import pytest
import torch

from latentdistill import nets, workflows
from latentdistill.autoencoders import TinyAutoencoderFamily
from latentdistill.config import AugmentConfig, EvaluateConfig, load_config
from latentdistill.data.latent_cache import LatentCache
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import train_experts
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.distill.distribution_matching import DistributionMatching
from latentdistill.distill.gradient_matching import GradientMatching
from latentdistill.evaluate.classification import evaluate_classification, train_classifiers
from latentdistill.export import read_distilled
from latentdistill.nets.stacked import StackedNetworks, can_stack
from latentdistill.runtime import Normalize
from latentdistill.tasks.classification import ClassificationTask, CrossEntropy

from helpers import coloured_images, make_tiny_base, tiny_overrides

DSA = DifferentiableAugment(AugmentConfig())
NORMALIZE = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
CPU = torch.device("cpu")


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def latent_gradient(objective, batched: bool, seed: int = 0) -> torch.Tensor:
    """The gradient on the latents of one matching loss: 3 classes, 2 synthetic latents and 6 real images each,
    decoded by a tiny TAESD, through ConvNet-3, with one DSA draw per class."""
    torch.manual_seed(seed)
    autoencoder = TinyAutoencoderFamily.random("taesd", seed=0)
    net = nets.build("convnet", num_classes=3, resolution=16, width=16)
    generator = torch.Generator().manual_seed(seed)
    real = {c: torch.randn(6, 3, 16, 16, generator=generator) + c for c in range(3)}
    latents = torch.randn(6, 4, 2, 2, generator=generator).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    draw = DSA.sample(3, torch.Generator().manual_seed(seed + 1))
    objective.batched = batched
    images = NORMALIZE(autoencoder.decode(latents))
    objective.loss(net, real, {c: images[labels == c] for c in range(3)}, draw).backward()
    return latents.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_gradient_matching_gives_the_per_class_gradients(seed):
    objective = GradientMatching(DSA, CrossEntropy())
    reference, batched = latent_gradient(objective, False, seed), latent_gradient(objective, True, seed)
    assert reference.abs().sum() > 0
    assert relative_difference(batched, reference) < 1e-4


def test_batched_distribution_matching_gives_the_per_class_gradients():
    objective = DistributionMatching(DSA, CrossEntropy())
    reference, batched = latent_gradient(objective, False), latent_gradient(objective, True)
    assert reference.abs().sum() > 0
    assert relative_difference(batched, reference) < 1e-4


def test_batch_norm_networks_keep_the_per_class_loop():
    assert can_stack(nets.build("convnet", 3, resolution=16, width=8))
    assert not can_stack(nets.build("convnet_bn", 3, resolution=16, width=8))
    with pytest.raises(ValueError, match="batch norm"):
        StackedNetworks([nets.build("convnet_bn", 3, resolution=16, width=8)])


@pytest.mark.parametrize("objective", ["gm", "dm"])
def test_batched_and_per_class_distillation_give_the_same_set(tmp_path, objective):
    """Three iterations of SGD on the latents: the sets agree to well under a thousandth of how far they moved."""
    base = make_tiny_base(tmp_path)
    sets = {}
    for batched, iterations in ((False, 0), (False, 3), (True, 3)):
        overrides = tiny_overrides(base, tmp_path / f"{objective}-{batched}-{iterations}", objective=objective, ipc=2,
                                   iterations=iterations, outer_loop=2, inner_loop=1, batched=batched)
        sets[batched, iterations] = read_distilled(workflows.run_distill(load_config(None, overrides), progress=False)).latents
    start, reference, batched = sets[False, 0], sets[False, 3], sets[True, 3]
    moved = (reference - start).norm()
    assert moved > 0
    assert (batched - reference).norm() / moved < 1e-2
    assert (batched - reference).abs().max() < 1e-3


def buffer_trajectories(directory, parallel: int, experts: int = 3) -> list[torch.Tensor]:
    images, labels = coloured_images(8, seed=2)
    meta = {"net": "convnet", "width": 8, "depth": 0, "resolution": 16, "experts": experts, "epochs": 2,
            "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 8}
    training = ClassifierTraining(images, labels, 3, NORMALIZE, DSA, 0, CPU)
    buffer = train_experts(training, directory, meta, progress=False, parallel=parallel)
    return [buffer.trajectory(i) for i in range(experts)]


def test_parallel_experts_write_the_sequential_trajectories(tmp_path):
    sequential = buffer_trajectories(tmp_path / "one-by-one", parallel=1)
    parallel = buffer_trajectories(tmp_path / "together", parallel=3)
    assert not torch.equal(sequential[0], sequential[1])  # each expert has its own seed and data order
    for one, together in zip(sequential, parallel):
        assert torch.allclose(together, one, rtol=1e-4, atol=1e-5)


def test_parallel_experts_resume_each_expert_exactly(tmp_path, monkeypatch):
    reference = buffer_trajectories(tmp_path / "reference", parallel=2)
    import latentdistill.distill.buffer as buffer_module

    real_save, saved = buffer_module.atomic_save_file, []

    def save_then_stop(*args, **kwargs):  # dies after the first epoch of both experts of the first group
        real_save(*args, **kwargs)
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(buffer_module, "atomic_save_file", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        buffer_trajectories(tmp_path / "resumed", parallel=2)
    monkeypatch.setattr(buffer_module, "atomic_save_file", real_save)
    resumed = buffer_trajectories(tmp_path / "resumed", parallel=2)
    for one, other in zip(reference, resumed):
        assert torch.equal(one, other)


def test_batched_evaluation_trains_the_sequential_networks():
    images, labels = coloured_images(4, seed=3)
    config = EvaluateConfig(epochs=3, batch_size=8)
    trainings = [ClassifierTraining(images, labels, 3, NORMALIZE, DSA, seed, CPU) for seed in (5, 6, 7)]
    one_by_one = train_classifiers(trainings, config, net="convnet", batched=False)
    together = train_classifiers(trainings, config, net="convnet", batched=True)
    for one, other in zip(one_by_one, together):
        for a, b in zip(one.parameters(), other.parameters()):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.equal(next(one_by_one[0].parameters()), next(one_by_one[1].parameters()))


def test_batched_evaluation_row_gives_the_sequential_accuracies():
    images, labels = coloured_images(12, seed=4)
    test_images, test_labels = coloured_images(10, seed=5)
    real = ClassifierTraining(images, labels, 3, NORMALIZE, DSA, 0, CPU)
    rows = torch.arange(len(labels))
    reports = {}
    for batched in (False, True):
        config = EvaluateConfig(epochs=4, runs=3, batch_size=8, batched=batched, reuse_baselines=False)
        reports[batched] = evaluate_classification(images[[0, 12, 24]], labels[[0, 12, 24]], real, rows, rows[:0],
                                                   test_images, test_labels, config, progress=False)
    row_sequential, row_batched = reports[False]["networks"]["convnet"], reports[True]["networks"]["convnet"]
    assert json.dumps({k: row_batched[k]["runs"] for k in ("distilled", "random_real")}) == \
        json.dumps({k: row_sequential[k]["runs"] for k in ("distilled", "random_real")})


def test_pixel_space_is_the_identity_autoencoder(tmp_path):
    """autoencoder.kind=pixels: the latents are the normalised images, a run with zero steps exports real
    training images unchanged, and a run with steps moves the pixels through the same loop."""
    base = make_tiny_base(tmp_path)
    pixels = ["autoencoder.kind=pixels", "autoencoder.name_or_path=unused", "data.mean=cifar10", "data.std=cifar10"]
    selected = load_config(None, tiny_overrides(base, tmp_path / "zero", ipc=2, iterations=0) + pixels)
    start = read_distilled(workflows.run_distill(selected, progress=False))
    assert start.latents.shape[1:] == (3, 16, 16) and start.metadata["autoencoder"]["kind"] == "pixels"
    cache = LatentCache.load(base / "cache" / "train")
    selected.cache.dir = ""
    assert ClassificationTask(selected).cache_directory().name.endswith("-pixels")
    mean, std = torch.tensor(selected.data.mean).view(1, 3, 1, 1), torch.tensor(selected.data.std).view(1, 3, 1, 1)
    assert torch.allclose(cache.latents, (cache.images.float() / 255 - mean) / std, atol=1e-6)
    train = {bytes(image.numpy()) for image in cache.images}
    assert all(bytes(image.numpy()) in train for image in start.images)  # a selected pool of real images
    moved = read_distilled(workflows.run_distill(
        load_config(None, tiny_overrides(base, tmp_path / "moved", ipc=2, iterations=2) + pixels), progress=False))
    assert not torch.equal(moved.latents, start.latents)


def test_batched_gradient_matching_with_the_reconstruction_loss():
    """Task sr: pseudo-classes of unequal synthetic counts form separate vmapped groups; same gradients."""
    from latentdistill.tasks.sr_matching import Reconstruction

    torch.manual_seed(0)
    net = nets.build("espcn", scale=2, task="sr")
    generator = torch.Generator().manual_seed(0)
    real = {c: torch.rand(4, 3, 16, 16, generator=generator) for c in range(3)}
    synthetic = torch.rand(7, 3, 16, 16, generator=generator).requires_grad_(True)
    counts = {0: (0, 3), 1: (3, 5), 2: (5, 7)}  # 3, 2 and 2 synthetic patches
    gradients = {}
    for batched in (False, True):
        objective = GradientMatching(DifferentiableAugment(AugmentConfig(strategy="none")), Reconstruction(2), batched=batched)
        synthetic.grad = None
        objective.loss(net, real, {c: synthetic[a:b] for c, (a, b) in counts.items()}).backward()
        gradients[batched] = synthetic.grad.clone()
    assert gradients[False].abs().sum() > 0
    assert relative_difference(gradients[True], gradients[False]) < 1e-4


STACKABLE = [name for name in nets.names("classification") if can_stack(nets.build(name, 3, resolution=32))]


def test_every_network_without_batch_norm_stacks():
    assert {"convnet", "alexnet", "vgg11", "resnet18", "vit"} <= set(STACKABLE)
    assert not {"convnet_bn", "vgg11_bn", "resnet18_bn"} & set(STACKABLE)


@pytest.mark.parametrize("name", ["alexnet", "vgg11", "resnet18", "vit"])
def test_batched_gradient_matching_through_every_architecture(name):
    """float64, where rounding cannot hide a difference (in fp32 ResNet-18's deep cosine distance amplifies
    rounding to ~4e-3); the ViT's attention runs its math kernel, which has a double backward under vmap."""
    torch.manual_seed(0)
    net = nets.build(name, num_classes=3, resolution=32).double()
    generator = torch.Generator().manual_seed(0)
    real = {c: torch.randn(3, 3, 32, 32, generator=generator, dtype=torch.float64) for c in range(3)}
    synthetic = torch.randn(6, 3, 32, 32, generator=generator, dtype=torch.float64).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    gradients = []
    for batched in (False, True):
        synthetic.grad = None
        objective = GradientMatching(DSA, CrossEntropy(), batched=batched)
        draw = DSA.sample(3, torch.Generator().manual_seed(1))
        objective.loss(net, real, {c: synthetic[labels == c] for c in range(3)}, draw).backward()
        gradients.append(synthetic.grad.clone())
    assert gradients[0].abs().sum() > 0
    assert relative_difference(gradients[1], gradients[0]) < 1e-9


@pytest.mark.parametrize("name", ["alexnet", "vgg11", "resnet18", "vit"])
def test_batched_evaluation_through_every_architecture(name):
    generator = torch.Generator().manual_seed(0)
    images, labels = (torch.rand(6, 3, 32, 32, generator=generator) * 255).to(torch.uint8), torch.tensor([0, 0, 1, 1, 2, 2])
    trainings = [ClassifierTraining(images, labels, 3, NORMALIZE, DSA, seed, CPU) for seed in (1, 2)]
    config = EvaluateConfig(epochs=1, batch_size=4)
    one_by_one = train_classifiers(trainings, config, net=name, batched=False)
    together = train_classifiers(trainings, config, net=name, batched=True)
    for one, other in zip(one_by_one, together):
        for a, b in zip(one.parameters(), other.parameters()):
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("override, message", [
    ("distill.batched=maybe", "config key 'distill.batched' must be one of true | false | auto, got 'maybe'"),
    ("evaluate.batched=1", "config key 'evaluate.batched' must be one of true | false | auto, got '1'"),
    ("buffer.parallel=0", "config key 'buffer.parallel' must be at least 1, got 0"),
])
def test_fast_path_keys_refuse_bad_values(override, message):
    from latentdistill.errors import LatentDistillError

    with pytest.raises(LatentDistillError) as error:
        load_config(None, [override])
    assert str(error.value) == message
