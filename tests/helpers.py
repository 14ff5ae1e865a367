"""Plain helpers and constants shared by the test files; the fixtures built on them live in ``conftest.py``.

Test files import them with ``from helpers import ...``: there is no ``tests/__init__.py``, so pytest puts
``tests/`` on ``sys.path`` before it imports ``conftest.py`` and the test modules.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentdistill.autoencoders import TinyAutoencoderFamily

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # real data and weights, where a machine has them

# The tiny image folder: three classes of noisy flat-colour images.
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
    """``root/{train,test}/{class_a,class_b,class_c}/NNN.png``, 16x16 RGB, the same bytes on every call."""
    seed = 0
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in CLASSES:
            for index in range(count):
                write_image(root / split / name / f"{index:03d}.png", COLOURS[name], seed)
                seed += 1
    return root


def save_tiny_autoencoder(folder: Path) -> Path:
    """A random TAESD (4 latent channels, 8x downscale) saved as encoder/decoder safetensors files."""
    TinyAutoencoderFamily.random("taesd", seed=0).save_pretrained(folder)
    return folder


def make_tiny_base(base: Path) -> Path:
    """The inputs ``tiny_overrides`` points at: the image folder ``base/tinyset`` and ``base/autoencoder``."""
    make_image_folder(base / "tinyset")
    save_tiny_autoencoder(base / "autoencoder")
    return base


def tiny_overrides(base: Path, run_dir: Path, **distill) -> list[str]:
    """Config overrides for a short CPU run on ``make_tiny_base(base)``; keywords replace ``distill.*`` values."""
    values = {"iterations": 4, "real_batch": 4, "net_width": 16, "checkpoint_every": 2, **distill}
    return [
        f"data.root={base / 'tinyset'}",
        f"data.resolution={RESOLUTION}",
        "data.val_per_class=2",
        f"autoencoder.name_or_path={base / 'autoencoder'}",
        f"cache.dir={base / 'cache'}",
        f"output_dir={run_dir}",
        "device=cpu",
        "evaluate.epochs=2",
        "evaluate.runs=1",
        *[f"distill.{key}={value}" for key, value in values.items()],
    ]


def one_line(error: pytest.ExceptionInfo) -> str:
    """The message of a caught error, checked to be a single line."""
    message = str(error.value)
    assert "\n" not in message, message
    return message
