"""The scripts users launch: ``accelerate launch pipelines/distill.py`` and the plain pipelines."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from latentdistill import read_distilled

from helpers import REPO, make_tiny_base, save_tiny_denoiser, tiny_overrides


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_accelerate_launch_distill_then_evaluate(tmp_path):
    base = make_tiny_base(tmp_path)
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(base, run_dir, iterations=2)
    launcher = Path(sys.executable).with_name("accelerate")
    launched = run([str(launcher), "launch", "--num_processes", "1", "--cpu", "pipelines/distill.py",
                    "--config", "configs/smoke.yaml", *overrides])
    assert launched.returncode == 0, launched.stderr[-2000:]
    output = run_dir / "distilled.safetensors"
    with safe_open(output, framework="pt") as file:
        assert file.get_slice("latents").get_shape()[0] == 3  # ipc 1, three classes
    # evaluation reads its paths from the config it is given (here the run's overrides), never from the file
    evaluated = run([sys.executable, "pipelines/evaluate.py", str(output),
                     *[o for o in overrides if not o.startswith("output_dir=")], "evaluate.runs=1", "evaluate.epochs=1"])
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert (run_dir / "evaluation-1" / "report.json").is_file()


def test_pipeline_errors_are_one_line(tmp_path):
    broken = run([sys.executable, "pipelines/encode.py", "--config", "configs/smoke.yaml", "distill.ipcc=3"])
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines() == ["error: unknown config key 'distill.ipcc' (did you mean distill.ipc?)"]


def distill_with_one_and_two_processes(tmp_path, base, extra_arguments: list[str], **distill) -> list:
    """The same tiny run under ``torchrun --nproc_per_node 2`` and as one plain process."""
    common = ["--config", "configs/smoke.yaml", "threads=1", *extra_arguments]
    torchrun = Path(sys.executable).with_name("torchrun")
    # --standalone: a free rendezvous port each time, so back-to-back launches cannot collide on one.
    two = run([str(torchrun), "--standalone", "--nproc_per_node", "2", "pipelines/distill.py", *common,
               *tiny_overrides(base, tmp_path / "two", **distill)])
    assert two.returncode == 0, two.stderr[-2000:]
    one = run([sys.executable, "pipelines/distill.py", *common, *tiny_overrides(base, tmp_path / "one", **distill)])
    assert one.returncode == 0, one.stderr[-2000:]
    return [read_distilled(tmp_path / name / "distilled.safetensors") for name in ("one", "two")]


@pytest.mark.parametrize("batched", [False, True])
def test_two_processes_match_one(tmp_path, batched):
    """Each process matches a share of the classes (batched: its share in one vmapped computation); summed
    latent gradients give the one-process result."""
    sets = distill_with_one_and_two_processes(tmp_path, make_tiny_base(tmp_path), [], iterations=3, ipc=2,
                                              outer_loop=2, inner_loop=2, batched=batched)
    assert [s.metadata["processes"] for s in sets] == [1, 2]
    assert [s.metadata["config"]["distill"]["batched"] for s in sets] == [batched, batched]
    assert torch.allclose(sets[0].latents, sets[1].latents, atol=1e-6 if not batched else 1e-5)


def test_two_processes_match_one_through_the_diffusion_prior(tmp_path):
    """The same under prior diffusion: the gradients of z and of the conditioning c are both summed."""
    denoiser = save_tiny_denoiser(tmp_path / "dit", "dit")
    prior = ["prior.name=diffusion", f"prior.denoiser={denoiser}", "prior.denoising_steps=2", "prior.t_start=300"]
    sets = distill_with_one_and_two_processes(tmp_path, make_tiny_base(tmp_path), prior, iterations=2, ipc=2,
                                              outer_loop=2, inner_loop=1)
    assert torch.allclose(sets[0].latents, sets[1].latents, atol=1e-6)
    assert torch.allclose(sets[0].embeddings, sets[1].embeddings, atol=1e-6)


def test_run_under_two_processes(tmp_path):
    """``torchrun -m latentdistill run`` on two CPU processes (device auto): the launch's world size is
    honoured, the main process exports before anyone evaluates, and only it evaluates."""
    base = make_tiny_base(tmp_path)
    torchrun = Path(sys.executable).with_name("torchrun")
    overrides = [o for o in tiny_overrides(base, tmp_path / "run", iterations=2) if o != "device=cpu"]
    launched = run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "latentdistill", "--no-progress", "run",
                    "--config", "configs/smoke.yaml", "threads=1", "precision=fp32", *overrides])
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert read_distilled(tmp_path / "run" / "distilled.safetensors").metadata["processes"] == 2
    assert (tmp_path / "run" / "report.json").is_file()
    assert launched.stdout.count("| convnet |") == 1  # one table: only the main process evaluates


def test_sr_distillation_under_two_processes_matches_one(tmp_path):
    from test_super_resolution import make_sr_folders

    from helpers import save_tiny_autoencoder

    root = make_sr_folders(tmp_path / "sr")
    save_tiny_autoencoder(tmp_path / "autoencoder")
    common = ["--config", "configs/sr_x2.yaml", "threads=1", "device=cpu", "precision=fp32",
              f"autoencoder.name_or_path={tmp_path / 'autoencoder'}", f"cache.dir={tmp_path / 'cache'}",
              f"sr.train=[{root / 'train'}]", f"sr.test=[{root / 'test'}]", "sr.patch_size=16", "sr.stride=16",
              "sr.budget=0.25", "sr.pool=1.0", "sr.pseudo_classes=2", "sr.synthetic_batch=2", "sr.iterations=5",
              "distill.iterations=3", "distill.real_batch=4", "distill.checkpoint_every=2"]
    torchrun = Path(sys.executable).with_name("torchrun")
    two = run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "latentdistill", "--no-progress", "distill",
               *common, f"output_dir={tmp_path / 'two'}"])
    assert two.returncode == 0, two.stderr[-3000:]
    one = run([sys.executable, "-m", "latentdistill", "--no-progress", "distill", *common, f"output_dir={tmp_path / 'one'}"])
    assert one.returncode == 0, one.stderr[-3000:]
    sets = [read_distilled(tmp_path / name / "distilled.safetensors") for name in ("one", "two")]
    assert [s.metadata["processes"] for s in sets] == [1, 2]
    assert torch.allclose(sets[0].latents, sets[1].latents, atol=1e-5)
