"""The objectives (gm, dm, mtt, pm), the expert buffer and the k-means start, on tiny data."""

import json

import pytest
import torch
from torch.func import functional_call

from latentdistill import nets, workflows
from latentdistill.autoencoders import TinyAutoencoderFamily
from latentdistill.cli import main
from latentdistill.config import AugmentConfig, load_config
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import (
    StartWindow,
    expert_path,
    load_buffer,
    parameter_layout,
    train_experts,
    unflatten,
)
from latentdistill.distill.checkpoint import load_checkpoint
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.distill.distribution_matching import DistributionMatching
from latentdistill.distill.gradient_matching import GradientMatching
from latentdistill.distill.objective import IterationContext
from latentdistill.distill.performance_matching import PerformanceMatching
from latentdistill.distill.synthetic import initial_synthetic_set, kmeans
from latentdistill.distill.trajectory_matching import TrajectoryMatching
from latentdistill.errors import LatentDistillError
from latentdistill.export import read_distilled
from latentdistill.run_folder import RunFolder
from latentdistill.runtime import Normalize
from latentdistill.tasks.classification import CrossEntropy

from helpers import coloured_images, make_tiny_base, one_line, tiny_overrides

CHECKPOINT_FILE = RunFolder.CHECKPOINT
CE = CrossEntropy()

NO_AUGMENT = DifferentiableAugment(AugmentConfig(strategy="none"))
NORMALIZE = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def fixed_context(net, latents, autoencoder, optimizer, real, generator_seed=0) -> IterationContext:
    def generate():
        return NORMALIZE(autoencoder.decode(latents))

    def update(loss):
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def synthetic_batches(generator):
        images = generate()
        return {c: images[LABELS == c] for c in range(3)}

    return IterationContext(net, torch.Generator().manual_seed(generator_seed), generate, lambda g: real,
                            synthetic_batches, update, LABELS, 3, torch.device("cpu"))


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    autoencoder = TinyAutoencoderFamily.random("taesd", seed=0)
    images, labels = coloured_images(8, seed=1)
    real = {c: NORMALIZE(images[labels == c].float() / 255) for c in range(3)}
    latents = autoencoder.encode(images[[0, 1, 8, 9, 16, 17]].float() / 255).detach().clone().requires_grad_(True)
    return autoencoder, images, labels, real, latents


@pytest.mark.parametrize("objective_name", ["gm", "dm"])
def test_matching_loss_decreases_on_a_fixed_network_and_reaches_the_latents(setup, objective_name):
    autoencoder, _, _, real, latents = setup
    net = nets.build("convnet", num_classes=3, resolution=16, width=16)
    for parameter in net.parameters():  # a fixed network: only the latents move
        parameter.requires_grad_(objective_name == "gm")  # gm differentiates the net's gradients
    objective = (GradientMatching(NO_AUGMENT, CE) if objective_name == "gm" else DistributionMatching(NO_AUGMENT, CE))
    optimizer = torch.optim.Adam([latents], lr=0.05)
    start = latents.detach().clone()
    losses = []
    for _ in range(12):
        images = NORMALIZE(autoencoder.decode(latents))
        loss = objective.loss(net, real, {c: images[LABELS == c] for c in range(3)})
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            assert latents.grad is not None and torch.isfinite(latents.grad).all()
            for label in range(3):  # every class's latents get their own gradient
                assert latents.grad[LABELS == label].abs().sum() > 0
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.99 * losses[0] and losses[-1] < min(losses[:3]), losses
    assert not torch.equal(latents.detach(), start)


def test_distribution_matching_loss_is_squared_mean_embedding_distance():
    torch.manual_seed(0)
    net = nets.build("convnet", num_classes=2, resolution=8, width=4)
    real = {0: torch.randn(5, 3, 8, 8), 1: torch.randn(3, 3, 8, 8)}
    synthetic = torch.randn(4, 3, 8, 8)
    labels = torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        expected = sum(((net.embed(real[c]).mean(0) - net.embed(synthetic[labels == c]).mean(0)) ** 2).sum() for c in (0, 1))
    assert float(DistributionMatching(NO_AUGMENT, CE).loss(net, real, {c: synthetic[labels == c] for c in (0, 1)}).detach()) == pytest.approx(float(expected), rel=1e-5)
    # identical sets match exactly
    assert float(DistributionMatching(NO_AUGMENT, CE).loss(net, {0: synthetic[:2], 1: synthetic[2:]}, {c: synthetic[labels == c] for c in (0, 1)}).detach()) == pytest.approx(0.0, abs=1e-8)


def make_buffer(directory, epochs=3, experts=1, momentum=0.0, seed=0):
    images, labels = coloured_images(8, seed=2)
    meta = {"net": "convnet", "width": 8, "depth": 0, "resolution": 16, "experts": experts, "epochs": epochs,
            "lr": 0.05, "momentum": momentum, "weight_decay": 0.0, "batch_size": 8}
    return train_experts(ClassifierTraining(images, labels, 3, NORMALIZE, NO_AUGMENT, seed, torch.device("cpu")), directory, meta,
                         progress=False)


def test_expert_buffer_records_the_trajectory(tmp_path):
    buffer = make_buffer(tmp_path / "buffer", epochs=3, experts=2)
    assert [p.name for p in buffer.files] == ["expert-000.safetensors", "expert-001.safetensors"]
    trajectory = buffer.trajectory(0)
    net = nets.build("convnet", 3, resolution=16, width=8)
    assert trajectory.shape == (4, sum(p.numel() for p in net.parameters()))
    assert all(not torch.equal(trajectory[i], trajectory[i + 1]) for i in range(3))  # it moved every epoch
    assert not torch.equal(buffer.trajectory(0), buffer.trajectory(1))  # experts differ
    assert not list((tmp_path / "buffer").glob("*.partial.*"))


def test_interrupted_buffer_resumes_to_the_same_trajectories(tmp_path, monkeypatch):
    reference = make_buffer(tmp_path / "reference", epochs=3, momentum=0.9).trajectory(0)
    import latentdistill.distill.buffer as buffer_module

    real_save, calls = buffer_module.atomic_save_file, []

    def save_then_stop(*args, **kwargs):  # the process dies right after the first epoch's checkpoint
        real_save(*args, **kwargs)
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(buffer_module, "atomic_save_file", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        make_buffer(tmp_path / "resumed", epochs=3, momentum=0.9)
    assert expert_path(tmp_path / "resumed", 0, partial=True).exists()
    monkeypatch.setattr(buffer_module, "atomic_save_file", real_save)
    resumed = make_buffer(tmp_path / "resumed", epochs=3, momentum=0.9).trajectory(0)
    assert torch.equal(resumed, reference)
    assert not expert_path(tmp_path / "resumed", 0, partial=True).exists()


def test_buffer_with_other_settings_is_refused(tmp_path):
    make_buffer(tmp_path / "buffer", epochs=2)
    with pytest.raises(LatentDistillError) as error:
        make_buffer(tmp_path / "buffer", epochs=3)
    assert "epochs" in one_line(error)
    with pytest.raises(LatentDistillError, match="no expert buffer"):
        load_buffer(tmp_path / "nothing")


def mtt_context(setup, steps_per_recompute, buffer, syn_steps=3):
    autoencoder, _, _, real, latents = setup
    objective = TrajectoryMatching(NO_AUGMENT, CE, buffer, syn_steps=syn_steps, expert_epochs=1, max_start_epoch=1,
                                   syn_lr=0.05, steps_per_recompute=steps_per_recompute)
    objective.synthetic_lr = objective.synthetic_lr.clone().requires_grad_(True)
    net = nets.build("convnet", num_classes=3, resolution=16, width=8)
    optimizer = torch.optim.Adam([latents, objective.synthetic_lr], lr=0.05)
    return objective, fixed_context(net, latents, autoencoder, optimizer, real), optimizer


def test_trajectory_matching_loss_decreases_and_reaches_latents_and_lr(setup, tmp_path):
    buffer = make_buffer(tmp_path / "buffer", epochs=2)
    objective, context, _ = mtt_context(setup, 0, buffer)
    latents = setup[4]
    losses = []
    for step in range(10):
        context.generator = torch.Generator().manual_seed(0)  # the same expert segment every step
        losses.append(objective.iteration(context)[0])
        if step == 0:
            assert latents.grad is not None and torch.isfinite(latents.grad).all() and latents.grad.abs().sum() > 0
            assert objective.synthetic_lr.grad is not None and float(objective.synthetic_lr.grad) != 0
    assert losses[-1] < losses[0], losses
    assert float(objective.synthetic_lr.detach()) != 0.05  # the learning rate is learned


def test_trajectory_matching_recomputed_steps_give_the_same_gradients(setup, tmp_path):
    buffer = make_buffer(tmp_path / "buffer", epochs=2)
    gradients = []
    for steps_per_recompute in (0, 1, 2):
        latents = setup[4]
        latents.grad = None
        objective, context, _ = mtt_context(setup, steps_per_recompute, buffer, syn_steps=4)
        context.update = lambda loss: (loss.backward(), float(loss.detach()))[1]
        objective.iteration(context)
        gradients.append((latents.grad.clone(), objective.synthetic_lr.grad.clone()))
    for latents_grad, lr_grad in gradients[1:]:
        torch.testing.assert_close(latents_grad, gradients[0][0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(lr_grad, gradients[0][1], rtol=1e-4, atol=1e-6)


def test_trajectory_matching_refuses_too_short_buffers(tmp_path):
    buffer = make_buffer(tmp_path / "buffer", epochs=2)
    with pytest.raises(LatentDistillError, match="distill.max_start_epoch"):
        TrajectoryMatching(NO_AUGMENT, CE, buffer, expert_epochs=2, max_start_epoch=2)  # start 1 + 2 > 2 epochs
    TrajectoryMatching(NO_AUGMENT, CE, buffer, expert_epochs=2, max_start_epoch=1)  # start 0 + 2: the last row


def test_performance_matching_is_the_real_loss_after_the_students_steps(setup, tmp_path):
    """One student step by hand: the objective's loss is the real loss of (start - lr * synthetic gradient),
    and its gradient reaches the latents and the learned lr; from an expert, the start is the expert's row."""
    autoencoder, _, _, real, latents = setup
    buffer = make_buffer(tmp_path / "buffer", epochs=2)
    for experts in (None, buffer):
        window = StartWindow(2, 3) if experts else None  # the expert's last epoch
        objective = PerformanceMatching(CE, syn_steps=1, syn_lr=0.05, experts=experts, window=window)
        objective.synthetic_lr = objective.synthetic_lr.clone().requires_grad_(True)
        torch.manual_seed(0)
        net = nets.build("convnet", num_classes=3, resolution=16, width=8)
        context = fixed_context(net, latents, autoencoder, torch.optim.SGD([latents], lr=0.0), real)
        context.update = lambda loss: (loss.backward(), float(loss.detach()))[1]
        latents.grad = None
        loss = objective.iteration(context)[0]
        start = buffer.trajectory(0)[2] if experts else torch.cat([p.detach().reshape(-1) for p in net.parameters()])
        layout = parameter_layout(net)
        parameters = start.clone().requires_grad_(True)
        images = NORMALIZE(autoencoder.decode(latents.detach()))
        step_loss = CE.loss(lambda x: functional_call(net, unflatten(parameters, layout), (x,)), images, LABELS)
        (gradient,) = torch.autograd.grad(step_loss, parameters)
        moved = unflatten(start - 0.05 * gradient, layout)
        real_images = torch.cat(list(real.values()))
        real_labels = torch.cat([torch.full((len(v),), c) for c, v in real.items()])
        expected = float(CE.loss(lambda x: functional_call(net, moved, (x,)), real_images, real_labels))
        assert loss == pytest.approx(expected, rel=1e-4)
        assert latents.grad is not None and latents.grad.abs().sum() > 0 and float(objective.synthetic_lr.grad) != 0


def test_performance_matching_loss_falls_over_iterations(setup):
    autoencoder, _, _, real, latents = setup
    objective = PerformanceMatching(CE, syn_steps=2, syn_lr=0.1)
    torch.manual_seed(0)
    net = nets.build("convnet", num_classes=3, resolution=16, width=8)
    context = fixed_context(net, latents, autoencoder, torch.optim.Adam([latents], lr=0.05), real)
    losses = [objective.iteration(context)[0] for _ in range(10)]
    assert losses[-1] < losses[0], losses


def test_gradient_matching_on_experts_uses_their_parameters(setup, tmp_path):
    autoencoder, _, _, real, latents = setup
    buffer = make_buffer(tmp_path / "buffer", epochs=2)
    objective = GradientMatching(NO_AUGMENT, CE, experts=buffer, window=StartWindow(1, 2))
    net = nets.build("convnet", num_classes=3, resolution=16, width=8)
    context = fixed_context(net, latents, autoencoder, torch.optim.SGD([latents], lr=0.0), real)
    objective.load_expert(context)
    torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in net.parameters()]), buffer.trajectory(0)[1])
    # the inner loop trains the network in place; the expert's recorded row stays as it was
    objective = GradientMatching(NO_AUGMENT, CE, outer_loop=2, inner_loop=1, experts=buffer, window=StartWindow(1, 2))
    context = fixed_context(net, latents, autoencoder, torch.optim.SGD([latents], lr=0.0), real)
    objective.iteration(context)
    torch.testing.assert_close(objective.draws.trajectories[0], buffer.trajectory(0), rtol=0, atol=0)
    other = nets.build("convnet", num_classes=3, resolution=16, width=4)
    with pytest.raises(LatentDistillError, match="another network"):
        objective.load_expert(fixed_context(other, latents, autoencoder, torch.optim.SGD([latents], lr=0.0), real))


# --- initialisation ------------------------------------------------------------------------------


def test_kmeans_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(20, 2, generator=generator) for c in centres])
    found, assignment = kmeans(points, 3, torch.Generator().manual_seed(1))
    order = found[:, 0] * 100 + found[:, 1]  # sort the centroids to compare with the true centres
    torch.testing.assert_close(found[order.argsort()], centres[torch.tensor([0, 2, 1])], atol=0.1, rtol=0)
    assert len(assignment.unique()) == 3 and all((assignment[i * 20:(i + 1) * 20] == assignment[i * 20]).all() for i in range(3))


@pytest.mark.parametrize("init", ["kmeans", "kmeans_centroids"])
def test_kmeans_initialisation_covers_each_class(init):
    generator = torch.Generator().manual_seed(0)
    # class 0 has two far-apart modes; k = 2 must take one latent from each
    modes = torch.cat([torch.full((10, 1, 2, 2), -5.0), torch.full((10, 1, 2, 2), 5.0)]) + 0.1 * torch.randn(20, 1, 2, 2, generator=generator)
    latents = torch.cat([modes, torch.randn(20, 1, 2, 2, generator=generator)])
    labels = torch.cat([torch.zeros(20, dtype=torch.long), torch.ones(20, dtype=torch.long)])
    synthetic = initial_synthetic_set(latents, labels, torch.arange(40), 2, 2, init, seed=0)
    class_zero = synthetic.latents[:2].mean(dim=(1, 2, 3))
    assert sorted(torch.sign(class_zero).tolist()) == [-1.0, 1.0]
    if init == "kmeans":  # real latents, distinct
        rows = [int((latents - row).flatten(1).abs().sum(1).argmin()) for row in synthetic.latents]
        assert all(torch.equal(latents[r], s) for r, s in zip(rows, synthetic.latents)) and len(set(rows)) == 4
    assert synthetic.labels.tolist() == [0, 0, 1, 1]


# --- end to end through the CLI: buffer -> distill mtt -> evaluate ------------------------------


def test_buffer_then_mtt_distillation_then_evaluation(tmp_path, capsys):
    base = make_tiny_base(tmp_path)
    overrides = tiny_overrides(base, tmp_path / "mtt", objective="mtt", ipc=1, iterations=3, syn_steps=2,
                               expert_epochs=1, max_start_epoch=1, optimizer="adam", lr=0.01)
    overrides += [f"buffer.dir={tmp_path / 'buffer'}", "buffer.experts=2", "buffer.epochs=2", "buffer.batch_size=8"]
    config = tmp_path / "config.yaml"
    config.write_text("seed: 0\n")
    assert main(["--no-progress", "buffer", "--config", str(config), *overrides]) == 0
    assert "expert buffer" in capsys.readouterr().out
    assert len(load_buffer(tmp_path / "buffer").files) == 2
    written = [p.stat().st_mtime_ns for p in load_buffer(tmp_path / "buffer").files]
    assert main(["--no-progress", "buffer", "--config", str(config), *overrides]) == 0
    assert [p.stat().st_mtime_ns for p in load_buffer(tmp_path / "buffer").files] == written  # reused, not retrained
    assert main(["--no-progress", "run", "--config", str(config), *overrides]) == 0
    distilled = read_distilled(tmp_path / "mtt" / "distilled.safetensors")
    assert set(distilled.metadata["learned"]) == {"synthetic_lr"}
    checkpoint = load_checkpoint(tmp_path / "mtt" / CHECKPOINT_FILE)
    assert float(checkpoint.extra["synthetic_lr"]) == pytest.approx(distilled.metadata["learned"]["synthetic_lr"])
    report = json.loads((tmp_path / "mtt" / "report.json").read_text())
    assert report["networks"]["convnet"]["distilled"]["runs"]
    # a buffer for another network is refused with the key named
    code = main(["--no-progress", "distill", "--config", str(config), *overrides, f"output_dir={tmp_path / 'other'}", "distill.net_width=32"])
    assert code == 2 and "width" in capsys.readouterr().err


def test_dm_and_kmeans_through_the_loop(tmp_path):
    base = make_tiny_base(tmp_path)
    config = load_config(None, tiny_overrides(base, tmp_path / "dm", objective="dm", ipc=2, init="kmeans", iterations=3))
    output = workflows.run_distill(config, progress=False)
    distilled = read_distilled(output)
    assert distilled.latents.shape[0] == 6 and distilled.metadata["config"]["distill"]["init"] == "kmeans"
    log = [json.loads(line) for line in (tmp_path / "dm" / "distill_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(row["loss"] > 0 for row in log)


def test_a_truncated_expert_file_is_named_in_one_line(tmp_path):
    buffer = make_buffer(tmp_path / "buffer", epochs=1)
    data = buffer.files[0].read_bytes()
    buffer.files[0].write_bytes(data[: len(data) // 2])
    with pytest.raises(LatentDistillError) as error:
        load_buffer(tmp_path / "buffer").trajectory(0)
    assert "expert trajectory" in one_line(error) and "expert-000.safetensors" in one_line(error)
