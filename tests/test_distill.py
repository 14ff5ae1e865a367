import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it: tests never touch the network

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open

from latentdistill import nets, workflows
from latentdistill.autoencoders import TinyAutoencoderFamily
from latentdistill.config import AugmentConfig, load_config
from latentdistill.distill.augment import (
    OPERATIONS,
    AugmentParams,
    DifferentiableAugment,
)
from latentdistill.distill.checkpoint import load_checkpoint
from latentdistill.distill.gradient_matching import GradientMatching, gradient_distance
from latentdistill.distill.synthetic import initial_synthetic_set
from latentdistill.errors import LatentDistillError
from latentdistill.export import read_distilled
from latentdistill.run_folder import RunFolder
from latentdistill.runtime import Normalize
from latentdistill.tasks.classification import CrossEntropy

from helpers import CLASSES, REPO, make_tiny_base, tiny_overrides

CHECKPOINT_FILE = RunFolder.CHECKPOINT


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("distill"))


@pytest.fixture(scope="module")
def tiny_run(tiny_base):
    """One short GM distillation (4 iterations, checkpoint every 2) through ``workflows.run_distill``."""
    config = load_config(None, tiny_overrides(tiny_base, tiny_base / "run"))
    output = workflows.run_distill(config, progress=False)
    return config, output


# --- gradient distance ----------------------------------------------------------------------------


def test_gradient_distance_identical_and_opposite():
    torch.manual_seed(0)
    conv, bias, linear = torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(5, 8)
    same = gradient_distance([conv, bias, linear], [conv.clone(), bias.clone(), linear.clone()])
    assert float(same) == pytest.approx(0.0, abs=1e-5)
    # Opposite gradients: cosine -1, so 2 per output unit (4 conv channels + 5 linear rows).
    opposite = gradient_distance([conv, bias, linear], [-conv, -bias, -linear])
    assert float(opposite) == pytest.approx(2.0 * (4 + 5), abs=1e-4)


def test_gradient_distance_ignores_1d_parameters():
    linear = torch.tensor([[3.0, 4.0]])
    base = gradient_distance([linear, torch.tensor([1.0, 2.0])], [linear, torch.tensor([-5.0, 7.0])])
    assert float(base) == pytest.approx(0.0, abs=1e-6)
    only_bias = gradient_distance([torch.zeros(2, 2), torch.ones(3)], [torch.ones(2, 2), -torch.ones(3)])
    # the (2, 2) pair has a zero real gradient: cosine 0 by the epsilon, so 1 per row; the bias counts nothing
    assert float(only_bias) == pytest.approx(2.0, abs=1e-6)


def test_gradient_distance_hand_computed_per_output_unit():
    # Linear rows [3, 4] vs [4, 3]: cosine 24/25, distance 1/25.
    value = gradient_distance([torch.tensor([[3.0, 4.0]])], [torch.tensor([[4.0, 3.0]])])
    assert float(value) == pytest.approx(1 / 25, abs=1e-6)
    # A conv kernel (2 out, 1 in, 1x2) is flattened per output channel: channel 0 orthogonal (1 - 0),
    # channel 1 identical (1 - 1): total 1. Flattening the whole tensor would give 1 - 1/2.
    real = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]]])
    synthetic = torch.tensor([[[[0.0, 1.0]]], [[[1.0, 0.0]]]])
    assert float(gradient_distance([real], [synthetic])) == pytest.approx(1.0, abs=1e-6)


# --- differentiable siamese augmentation -------------------------------------------------------


def test_sample_then_apply_is_siamese():
    augment = DifferentiableAugment(mode="all")
    images = torch.rand(4, 3, 16, 16)
    params = augment.sample(4, torch.Generator().manual_seed(3))
    first = augment.apply(images, params)
    second = augment.apply(images.clone(), params)
    assert torch.equal(first, second)
    again = augment.sample(4, torch.Generator().manual_seed(3))
    assert again.operations == params.operations == OPERATIONS
    assert torch.equal(augment.apply(images, again), first)
    other = augment.sample(4, torch.Generator().manual_seed(4))
    assert not torch.equal(augment.apply(images, other), first)
    assert not torch.equal(first, images)


def test_single_mode_runs_one_operation_family():
    augment = DifferentiableAugment()  # reference default: one family per draw
    drawn = {augment.sample(2, torch.Generator().manual_seed(seed)).operations for seed in range(40)}
    assert all(len(ops) == 1 for ops in drawn)
    assert {ops[0] for ops in drawn} == set(OPERATIONS)


def test_index_spreads_per_class_draws():
    augment = DifferentiableAugment(mode="all")
    per_class = augment.sample(3, torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 1, 2, 2])
    spread = per_class.index(labels)
    assert spread.operations == per_class.operations
    for key, values in spread.values.items():
        assert len(values) == 5
        for row, label in enumerate(labels.tolist()):
            assert torch.equal(values[row], per_class.values[key][label])
    # Same class, same image -> the same augmented image; different classes get different draws.
    image = torch.rand(1, 3, 16, 16)
    out = augment.apply(image.expand(5, -1, -1, -1).contiguous(), spread)
    assert torch.equal(out[0], out[1]) and torch.equal(out[3], out[4])
    assert not torch.equal(out[0], out[2])


@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_operation_is_differentiable(operation):
    augment = DifferentiableAugment(AugmentConfig(strategy=operation))
    images = torch.rand(3, 3, 16, 16, requires_grad=True)
    params = augment.sample(3, torch.Generator().manual_seed(1))
    assert params.operations == (operation,)
    out = augment.apply(images, params)
    assert out.shape == images.shape and torch.isfinite(out).all()
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    assert images.grad is not None
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_flip_parameter_flips_exactly():
    augment = DifferentiableAugment(AugmentConfig(strategy="flip"))
    images = torch.rand(2, 3, 8, 8)
    params = AugmentParams(("flip",), {"flip": torch.tensor([1.0, 0.0])})
    out = augment.apply(images, params)
    assert torch.equal(out[0], images[0].flip(-1))
    assert torch.equal(out[1], images[1])
    assert torch.equal(augment.apply(out, params), images)


def test_unknown_strategy_operation_is_refused():
    with pytest.raises(LatentDistillError, match="augment.strategy") as error:
        DifferentiableAugment(AugmentConfig(strategy="color_blur"))
    assert "blur" in str(error.value)
    assert not DifferentiableAugment(AugmentConfig(strategy="none")).enabled


# --- synthetic set --------------------------------------------------------------------------------


def test_initial_synthetic_set_picks_ipc_per_class_from_given_rows():
    labels = torch.arange(3).repeat_interleave(10)
    latents = torch.arange(30, dtype=torch.float32).view(30, 1, 1, 1).expand(30, 4, 2, 2).contiguous()
    rows = torch.tensor([r for r in range(30) if r % 10 >= 4])  # 6 allowed rows per class
    synthetic = initial_synthetic_set(latents, labels, rows, 3, ipc=3, init="random_real", seed=7)
    assert synthetic.latents.shape == (9, 4, 2, 2)
    assert synthetic.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    picked = synthetic.latents[:, 0, 0, 0].long()
    assert set(picked.tolist()) <= set(rows.tolist())
    assert len(set(picked.tolist())) == 9
    assert torch.equal(labels[picked], synthetic.labels)
    again = initial_synthetic_set(latents, labels, rows, 3, ipc=3, init="random_real", seed=7)
    assert torch.equal(again.latents, synthetic.latents)
    # The start is a copy: optimising it never writes into the latent cache.
    synthetic.latents += 1
    assert torch.equal(latents[:, 0, 0, 0], torch.arange(30, dtype=torch.float32))

    noise = initial_synthetic_set(latents, labels, rows, 3, ipc=2, init="noise", seed=0)
    assert noise.latents.shape == (6, 4, 2, 2) and noise.labels.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(LatentDistillError, match="distill.ipc=7"):
        initial_synthetic_set(latents, labels, rows, 3, ipc=7, init="random_real", seed=0)
    with pytest.raises(LatentDistillError, match="distill.init"):
        initial_synthetic_set(latents, labels, rows, 3, ipc=1, init="zeros", seed=0)


# --- gradient matching reaches the latents -----------------------------------------------------


def test_gradient_matching_loss_reaches_latents():
    torch.manual_seed(0)
    autoencoder = TinyAutoencoderFamily.random("taesd", seed=0)
    normalize = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    net = nets.build("convnet", num_classes=3, resolution=16, width=16)
    objective = GradientMatching(DifferentiableAugment(), CrossEntropy())
    latents = torch.randn(6, 4, 2, 2, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    real = {c: normalize(torch.rand(4, 3, 16, 16)) for c in range(3)}
    params = objective.augment.sample(3, torch.Generator().manual_seed(0))
    images = normalize(autoencoder.decode(latents))
    loss = objective.loss(net, real, {c: images[labels == c] for c in range(3)}, params)
    assert loss.dim() == 0 and torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    assert latents.grad is not None
    assert torch.isfinite(latents.grad).all() and latents.grad.abs().sum() > 0
    # every class's latents get a gradient: each class contributes its own matching term
    for label in range(3):
        assert latents.grad[labels == label].abs().sum() > 0


# --- the loop through workflows.run_distill ----------------------------------------------------


def test_run_distill_optimises_the_latents(tiny_run):
    config, output = tiny_run
    run_dir = Path(config.output_dir)
    assert output == run_dir / "distilled.safetensors"
    log = [json.loads(line) for line in (run_dir / "distill_log.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in log] == [1, 2, 3, 4]
    assert all(np.isfinite(entry["loss"]) and entry["loss"] > 0 for entry in log)

    distilled = read_distilled(output)
    data = workflows.run_encode(config, progress=False)
    start = initial_synthetic_set(data.train.latents, data.train.labels, data.train_rows, 3, config.distill.ipc,
                                  config.distill.init, config.seed)
    assert distilled.latents.shape == start.latents.shape == (3, 4, 2, 2)
    assert torch.equal(distilled.labels, start.labels)
    assert torch.isfinite(distilled.latents).all()
    assert not torch.equal(distilled.latents, start.latents), "the latents never moved"
    assert distilled.images.shape == (3, 3, 16, 16) and distilled.images.dtype == torch.uint8
    assert distilled.classes == list(CLASSES)
    assert distilled.metadata["config"]["distill"]["iterations"] == 4

    checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
    assert checkpoint.iteration == 4
    assert torch.equal(checkpoint.latents, distilled.latents)
    assert (run_dir / "grid.png").is_file() and (run_dir / "config.yaml").is_file()


@pytest.fixture
def copied_checkpoint(tiny_run, tmp_path) -> tuple[Path, bytes]:
    """A fresh run folder holding only a copy of the tiny run's checkpoint, and that checkpoint's bytes."""
    config, _ = tiny_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(Path(config.output_dir) / CHECKPOINT_FILE, run_dir / CHECKPOINT_FILE)
    return run_dir, (run_dir / CHECKPOINT_FILE).read_bytes()


def test_existing_checkpoint_refuses_to_start_without_resume(copied_checkpoint, tiny_base):
    run_dir, before = copied_checkpoint
    again = load_config(None, tiny_overrides(tiny_base, run_dir))
    with pytest.raises(LatentDistillError, match="--resume") as error:
        workflows.run_distill(again, progress=False)
    assert str(run_dir / CHECKPOINT_FILE) in str(error.value)
    assert (run_dir / CHECKPOINT_FILE).read_bytes() == before
    assert not (run_dir / "distilled.safetensors").exists()


def test_existing_export_refuses_to_start_without_resume(tiny_run, tiny_base):
    config, output = tiny_run
    before = output.read_bytes()
    with pytest.raises(LatentDistillError, match="already exists"):
        workflows.run_distill(load_config(None, tiny_overrides(tiny_base, Path(config.output_dir))), progress=False)
    assert output.read_bytes() == before


def test_resume_with_changed_distill_section_is_refused(tiny_run, copied_checkpoint, tiny_base):
    _, output = tiny_run
    run_dir, before = copied_checkpoint
    changed = load_config(None, tiny_overrides(tiny_base, run_dir, lr=0.05))
    with pytest.raises(LatentDistillError, match=r"config key 'distill.lr' \(0.1 in the saved run, 0.05 now\) differs"):
        workflows.run_distill(changed, resume=True, progress=False)
    assert (run_dir / CHECKPOINT_FILE).read_bytes() == before
    # The unchanged config resumes: the checkpoint is complete, so the export is the same set.
    same = load_config(None, tiny_overrides(tiny_base, run_dir))
    resumed = workflows.run_distill(same, resume=True, progress=False)
    assert torch.equal(read_distilled(resumed).latents, read_distilled(output).latents)


def test_resume_never_rewrites_a_finished_run(tiny_run, tiny_base, snapshot):
    config, _ = tiny_run
    before = snapshot(Path(config.output_dir))
    longer = load_config(None, tiny_overrides(tiny_base, Path(config.output_dir), iterations=6))
    with pytest.raises(LatentDistillError, match="holds a finished run .*--resume never rewrites it"):
        workflows.run_distill(longer, resume=True, progress=False)
    assert snapshot(Path(config.output_dir)) == before


def test_resume_may_extend_a_copied_checkpoint(copied_checkpoint, tiny_base, tmp_path):
    """More iterations on resume (from a finished run's checkpoint copied into a new folder) continue the
    same trajectory as one longer run."""
    run_dir, _ = copied_checkpoint
    extended = workflows.run_distill(load_config(None, tiny_overrides(tiny_base, run_dir, iterations=6)), resume=True, progress=False)
    longer = workflows.run_distill(load_config(None, tiny_overrides(tiny_base, tmp_path / "longer", iterations=6)), progress=False)
    assert torch.equal(read_distilled(extended).latents, read_distilled(longer).latents)
    assert [json.loads(line)["iteration"] for line in (run_dir / "distill_log.jsonl").read_text().splitlines()][-2:] == [5, 6]


# --- the acceptance test: SIGKILL + --resume == uninterrupted, bitwise ----------------------


def _cli(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "latentdistill", "--no-progress", "distill", "--config", str(config),
            f"output_dir={run_dir}", *extra]


def _checkpoint_iteration(path: Path) -> int | None:
    if not path.exists():
        return None
    with safe_open(path, framework="pt") as file:
        return int(file.metadata()["iteration"])


def _last_logged(run_dir: Path) -> int:
    last = 0
    log = run_dir / "distill_log.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            last = max(last, json.loads(line)["iteration"])
        except ValueError:
            pass  # a line being written
    return last


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    iterations = 20
    make_tiny_base(tmp_path)
    config = {
        "seed": 3,
        "device": "cpu",
        "threads": 1,
        "data": {"root": str(tmp_path / "tinyset"), "resolution": 16, "val_per_class": 2},
        "autoencoder": {"name_or_path": str(tmp_path / "autoencoder")},
        "cache": {"dir": str(tmp_path / "cache")},
        # ipc 2 with outer/inner loops of 2: the momentum buffer and the inner loop both carry state
        "distill": {"ipc": 2, "iterations": iterations, "checkpoint_every": 3, "real_batch": 4, "net_width": 16,
                    "outer_loop": 2, "inner_loop": 2, "momentum": 0.5},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    # Uninterrupted (this also builds the latent cache, so the killed run spends its time distilling).
    full_dir = tmp_path / "full"
    done = subprocess.run(_cli(config_path, full_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    checkpoint = killed_dir / CHECKPOINT_FILE
    process = subprocess.Popen(_cli(config_path, killed_dir), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        # Kill between two checkpoints: at least one iteration done past the saved one, to be redone.
        while process.poll() is None and time.monotonic() < deadline:
            iteration = _checkpoint_iteration(checkpoint)
            if iteration is not None and iteration >= 3 and _last_logged(killed_dir) > iteration:
                break
            time.sleep(0.01)
        if process.poll() is not None:
            pytest.fail(f"the run ended (rc {process.returncode}) before it could be killed: raise distill.iterations "
                        f"above {iterations}\n{process.stderr.read()[-2000:]}")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, (
        f"the run finished (rc {process.returncode}) before SIGKILL landed: raise distill.iterations above {iterations}"
    )
    assert not (killed_dir / "distilled.safetensors").exists(), "the run finished before SIGKILL landed"
    killed_at = _checkpoint_iteration(checkpoint)
    assert killed_at is not None and 3 <= killed_at < iterations, f"killed at checkpoint {killed_at}"
    assert _last_logged(killed_dir) > killed_at  # some work after the checkpoint was lost

    resumed = subprocess.run(_cli(config_path, killed_dir, "--resume"), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _checkpoint_iteration(checkpoint) == iterations

    full = read_distilled(full_dir / "distilled.safetensors")
    again = read_distilled(killed_dir / "distilled.safetensors")
    assert torch.equal(again.labels, full.labels)
    assert torch.equal(again.latents, full.latents), (
        f"resumed from iteration {killed_at}: max difference {(again.latents - full.latents).abs().max():.3e}"
    )
    assert torch.equal(again.images, full.images)
    # and the run really moved the latents, so the comparison is not between two untouched starts
    run_config = load_config(config_path, [f"output_dir={full_dir}"])
    data = workflows.run_encode(run_config, progress=False)
    start = initial_synthetic_set(data.train.latents, data.train.labels, data.train_rows, 3, 2, "random_real", seed=3)
    assert torch.equal(start.labels, full.labels)
    assert not torch.equal(start.latents, full.latents)
    log = [json.loads(line) for line in (full_dir / "distill_log.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in log] == list(range(1, iterations + 1))
    # the resumed run's log holds each iteration once (work past the checkpoint was redone, not repeated),
    # with the same losses as the uninterrupted run
    resumed_log = [json.loads(line) for line in (killed_dir / "distill_log.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in resumed_log] == list(range(1, iterations + 1))
    assert [entry["loss"] for entry in resumed_log] == [entry["loss"] for entry in log]
