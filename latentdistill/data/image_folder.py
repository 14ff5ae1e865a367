"""ImageFolder datasets: ``<root>/<split>/<class>/*.jpg|png|bmp``.

Images are read once, converted to 8-bit RGB, resized (shorter side) and centre-cropped to a square
resolution, and kept as uint8 tensors: 50,000 CIFAR images are 150 MB, small enough to hold in memory
for the whole run, which is what makes the per-iteration real batches cheap.
"""

from __future__ import annotations

import hashlib
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from latentdistill.errors import LatentDistillError
from latentdistill.io import display_path, error_reason

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class ImageFolder:
    """The file list of one split: paths, integer labels and class names (sorted folder names)."""

    root: Path
    split: str
    classes: tuple[str, ...]
    files: tuple[Path, ...]
    labels: tuple[int, ...]

    @classmethod
    def scan(cls, root: str | Path, split: str, classes: tuple[str, ...] | None = None,
             allow_empty: bool = False) -> ImageFolder:
        """The split ``root/split/<class>/*``; a class folder without images is refused unless ``allow_empty``
        (a distilled set may leave a class empty; a dataset may not)."""
        root = Path(root)
        if not root.is_dir():
            raise LatentDistillError(f"dataset folder not found: {display_path(root)}")
        split_dir = root / split
        if not split_dir.is_dir():
            found = display_path(", ".join(sorted(p.name for p in _entries(root, Path.is_dir)))) or "nothing"
            where = f"split '{display_path(split)}' not found in {display_path(root)}"
            raise LatentDistillError(f"{where} (found: {found})")
        folders = sorted(p.name for p in _entries(split_dir, Path.is_dir) if not p.name.startswith("."))
        if not folders:
            raise LatentDistillError(f"no class folders in {display_path(split_dir)}")
        if classes is not None and tuple(folders) != tuple(classes):
            missing = sorted(display_path(name) for name in set(classes) - set(folders))
            extra = sorted(display_path(name) for name in set(folders) - set(classes))
            raise LatentDistillError(
                f"classes of {display_path(split_dir)} differ from the training split "
                f"(missing: {missing}, extra: {extra})"
            )
        files: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(folders):
            images = _entries(split_dir / name, Path.is_file)
            class_files = sorted(p for p in images if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not class_files and not allow_empty:
                raise LatentDistillError(
                    f"class folder {display_path(split_dir / name)} holds no images ({'|'.join(IMAGE_EXTENSIONS)})"
                )
            files += class_files
            labels += [label] * len(class_files)
        return cls(root, split, tuple(folders), tuple(files), tuple(labels))

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """A hash of relative paths and file sizes: changes when files are added, removed or replaced.

        Names are hashed as their bytes on disk (``os.fsencode``), so a name that is not UTF-8 hashes
        too, and a UTF-8 name hashes as it always did."""
        digest = hashlib.sha256()
        for path in self.files:
            try:
                size = path.stat().st_size
            except OSError as error:
                raise LatentDistillError(f"cannot read image {display_path(path)}: {error_reason(error)}") from None
            digest.update(os.fsencode(path.relative_to(self.root)) + f":{size}\n".encode())
        return digest.hexdigest()[:16]


def _entries(folder: Path, keep) -> list[Path]:
    """The entries of a folder for which ``keep(path)`` holds; an unreadable folder is named in one line."""
    try:
        return [path for path in folder.iterdir() if keep(path)]
    except OSError as error:
        raise LatentDistillError(f"cannot list folder {display_path(folder)}: {error_reason(error)}") from None


# Errors Pillow raises on malformed files, besides its own: each means "this file is not a valid image".
_MALFORMED = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error,
              IndexError, TypeError, ZeroDivisionError)


def read_rgb(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB whatever its mode or bit depth (transparency over white); a one-line
    error naming the file when it cannot be read, or claims more pixels than ``Image.MAX_IMAGE_PIXELS``
    (a decompression bomb: a small file that would need gigabytes once decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, not merely warned about
            with Image.open(path) as image:
                image.load()
                if image.mode.startswith("I") or image.mode == "F":
                    image = _to_8bit(image)
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    rgba = image.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(background, rgba)
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        message = f"cannot read image {display_path(path)}: refused as too large ({error_reason(error)})"
        raise LatentDistillError(message) from None
    except _MALFORMED as error:
        raise LatentDistillError(f"cannot read image {display_path(path)}: {error_reason(error)}") from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """An "L" image from Pillow's wide modes, whose own ``convert`` clips every value above 255 (a
    full-range 16-bit image would turn white).

    16-bit ("I;16*") values are divided by 257 and rounded. "I" holds 32-bit integers; from a PNG they
    are 16-bit and read the same way, and only values past 65535 make it scale the 0..2^31-1 range.
    "F" holds floats in 0..1 (the usual convention), or in Pillow's 0..255 when any value exceeds 1.
    """
    values = np.asarray(image)
    if image.mode != "F" and (values.size == 0 or (values.min() >= 0 and values.max() <= 65535)):
        return Image.fromarray(((values.astype(np.uint32) + 128) // 257).astype(np.uint8), "L")  # rounded v / 257
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if image.mode == "F":
        scale = 255.0 if values.size and values.max() <= 1 else 1.0
    else:
        scale = 255.0 / (2**31 - 1)
    return Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")


def load_image(path: str | Path, resolution: int) -> torch.Tensor:
    """Read one image as a (3, resolution, resolution) uint8 tensor, whatever its mode or size."""
    image = read_rgb(path)
    width, height = image.size
    if (width, height) != (resolution, resolution):
        scale = resolution / min(width, height)
        new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
        image = image.resize(new_size, Image.Resampling.BICUBIC)
        left = (new_size[0] - resolution) // 2
        top = (new_size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def load_images(
    paths: list[Path] | tuple[Path, ...],
    resolution: int,
    skip_bad: bool = False,
    progress: bool = True,
    description: str = "reading images",
) -> tuple[torch.Tensor, list[int], list[tuple[Path, str]]]:
    """Read images into one uint8 tensor.

    Returns the images, the indices (into ``paths``) that were read, and the unreadable files with their
    reasons. Without ``skip_bad`` the first unreadable file stops the run with its name.
    """
    images = torch.empty(len(paths), 3, resolution, resolution, dtype=torch.uint8)
    kept: list[int] = []
    bad: list[tuple[Path, str]] = []
    for index, path in enumerate(tqdm(paths, desc=description, disable=not progress, leave=False)):
        try:
            images[len(kept)] = load_image(path, resolution)
        except LatentDistillError as error:
            if not skip_bad:
                raise
            bad.append((Path(path), str(error)))
            continue
        kept.append(index)
    return images[: len(kept)], kept, bad


def split_train_validation(
    labels: torch.Tensor, per_class: int, seed: int, classes: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Carve ``per_class`` validation images per class from the training split, with a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    validation = []
    for label in labels.unique().tolist():
        rows = (labels == label).nonzero().flatten()
        if len(rows) <= per_class:
            raise LatentDistillError(
                f"class '{display_path(classes[label]) if classes else label}' has {len(rows)} images: "
                f"too few to carve {per_class} validation images "
                "(lower data.val_per_class)"
            )
        validation.append(rows[torch.randperm(len(rows), generator=generator)[:per_class]])
    validation_rows = torch.cat(validation).sort().values if validation else torch.empty(0, dtype=torch.long)
    is_train = torch.ones(len(labels), dtype=torch.bool)
    is_train[validation_rows] = False
    return is_train.nonzero().flatten(), validation_rows
