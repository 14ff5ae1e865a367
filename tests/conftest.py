import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it: tests never touch the network
# The tests' tensors are tiny: one thread is faster than many fighting over shared cores (also for subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest
import torch

from helpers import SHARED, make_image_folder, save_tiny_autoencoder

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "dataset")


@pytest.fixture
def tiny_autoencoder_dir(tmp_path) -> Path:
    """A random TAESD (4 latent channels, 8x downscale) saved as encoder/decoder safetensors files."""
    return save_tiny_autoencoder(tmp_path / "taesd")


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED}")
    return SHARED


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.stat().st_size, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def snapshot():
    """``snapshot(folder)``: every file below it with mtime, size and bytes, to check that nothing was touched."""
    return _snapshot
