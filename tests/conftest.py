import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it: tests never touch the network
# The tests' tensors are tiny: one thread is faster than many fighting over shared cores (also for subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentdistill.autoencoders import TinyAutoencoderFamily

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

CLASSES = ("class_a", "class_b", "class_c")
COLOURS = {"class_a": (220, 40, 40), "class_b": (40, 200, 60), "class_c": (50, 60, 230)}
TRAIN_PER_CLASS = 12
TEST_PER_CLASS = 4
RESOLUTION = 16


def write_image(path: Path, colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (RESOLUTION, RESOLUTION)) -> Path:
    """A flat class colour plus a little noise and a bright square, so images of one class differ."""
    rng = np.random.default_rng(seed)
    width, height = size
    array = np.clip(np.array(colour, dtype=np.int16) + rng.integers(-30, 31, (height, width, 3)), 0, 255).astype(np.uint8)
    x, y = rng.integers(0, max(1, width - 4)), rng.integers(0, max(1, height - 4))
    array[y : y + 4, x : x + 4] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, "RGB").save(path)
    return path


def make_image_folder(root: Path, train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS) -> Path:
    """``root/{train,test}/{class_a,class_b,class_c}/NNN.png``, 16x16 RGB."""
    seed = 0
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in CLASSES:
            for index in range(count):
                write_image(root / split / name / f"{index:03d}.png", COLOURS[name], seed)
                seed += 1
    return root


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "dataset")


@pytest.fixture
def tiny_autoencoder_dir(tmp_path) -> Path:
    """A random TAESD (4 latent channels, 8x downscale) saved as encoder/decoder safetensors files."""
    folder = tmp_path / "taesd"
    TinyAutoencoderFamily.random("taesd", seed=0).save_pretrained(folder)
    return folder


@pytest.fixture
def shared_dir() -> Path:
    shared = Path(__file__).resolve().parents[1].parent / "shared"
    if not shared.is_dir():
        pytest.skip(f"shared data folder not found: {shared}")
    return shared


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
