import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it: tests never touch the network

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from latentdistill.export import read_distilled

from helpers import REPO, SHARED

CIFAR = SHARED / "data" / "cifar10"
TAEF2 = SHARED / "weights" / "taef2"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

pytestmark = pytest.mark.slow


def make_small_cifar(root: Path, train: int = 30, test: int = 10) -> Path:
    """An ImageFolder of symlinks to the first ``train``/``test`` CIFAR-10 JPEGs of each class."""
    for split, count in (("train", train), ("test", test)):
        for name in CLASSES:
            source = CIFAR / split / name
            target = root / split / name
            target.mkdir(parents=True)
            files = sorted(p for p in source.iterdir() if p.suffix.lower() == ".jpg")[:count]
            assert len(files) == count, f"{source} holds fewer than {count} JPEGs"
            for path in files:
                (target / path.name).symlink_to(path.resolve())
    return root


def test_run_on_real_cifar_with_real_taef2(tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: no real data or weights on this machine")
    if not CIFAR.is_dir() or not TAEF2.is_dir():
        pytest.skip(f"CIFAR-10 ({CIFAR}) or taef2 weights ({TAEF2}) missing from {SHARED}")
    root = make_small_cifar(tmp_path / "cifar10-small")
    run_dir = tmp_path / "run"
    config = {
        "output_dir": str(run_dir),
        "seed": 0,
        "device": "cpu",
        "precision": "fp32",
        "data": {"root": str(root), "resolution": 32, "val_per_class": 5},
        "autoencoder": {"name_or_path": str(TAEF2)},
        "cache": {"dir": str(tmp_path / "cache")},
        "distill": {"ipc": 1, "iterations": 3, "real_batch": 8, "net_width": 32, "checkpoint_every": 2},
        "evaluate": {"runs": 1, "epochs": 4, "batch_size": 64},
    }
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "latentdistill", "--no-progress", "run", "--config", str(config_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"distilled set: {run_dir / 'distilled.safetensors'}" in result.stdout
    assert "| distilled |" in result.stdout and "| random real |" in result.stdout

    distilled = read_distilled(run_dir / "distilled.safetensors")
    assert distilled.classes == CLASSES
    assert distilled.latents.shape == (10, 32, 4, 4) and distilled.latents.dtype == torch.float32
    assert torch.isfinite(distilled.latents).all()
    assert distilled.labels.tolist() == list(range(10))
    assert distilled.images.shape == (10, 3, 32, 32) and distilled.images.dtype == torch.uint8
    # decoded from real-image starts after 3 small steps: pictures, not a flat or saturated field
    pixels = distilled.images.float()
    assert 30 < float(pixels.mean()) < 225 and float(pixels.std()) > 20
    assert all(float(image.float().std()) > 5 for image in distilled.images)
    spec = distilled.metadata["autoencoder"]
    assert spec["variant"] == "taef2" and spec["latent_channels"] == 32
    assert distilled.metadata["dataset"] == "cifar10-small"
    assert distilled.metadata["ipc"] == 1 and distilled.metadata["config"]["distill"]["iterations"] == 3

    with Image.open(run_dir / "grid.png") as grid:
        assert grid.size == (1 * 34 * 2, 10 * 34 * 2)

    report = json.loads((run_dir / "report.json").read_text())
    assert report["dataset"] == "cifar10-small" and report["ipc"] == 1
    assert report["protocol"]["epochs"] == 4
    for name in ("distilled", "random_real"):
        row = report["networks"]["convnet"][name]
        assert len(row["runs"]) == 1
        assert 0.0 <= row["mean"] <= 100.0
    assert "evaluation" not in distilled.metadata  # the judged file is never rewritten
    assert report["distilled_file"] == str((run_dir / "distilled.safetensors").resolve())
    log = [json.loads(line) for line in (run_dir / "distill_log.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in log] == [1, 2, 3]
    assert all(entry["loss"] == entry["loss"] and entry["loss"] > 0 for entry in log)
