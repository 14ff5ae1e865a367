"""ImageFolder datasets: ``<root>/<split>/<class>/*.jpg|png|bmp``.

Images are read once, converted to RGB, resized (shorter side) and centre-cropped to a square
resolution, and kept as uint8 tensors: 50,000 CIFAR images are 150 MB, small enough to hold in memory
for the whole run, which is what makes the per-iteration real batches cheap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from latentdistill.errors import LatentDistillError

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
    def scan(cls, root: str | Path, split: str, classes: tuple[str, ...] | None = None) -> ImageFolder:
        root = Path(root)
        if not root.is_dir():
            raise LatentDistillError(f"dataset folder not found: {root}")
        split_dir = root / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise LatentDistillError(f"split '{split}' not found in {root} (found: {', '.join(found) or 'nothing'})")
        folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise LatentDistillError(f"no class folders in {split_dir}")
        if classes is not None and tuple(folders) != tuple(classes):
            missing = sorted(set(classes) - set(folders))
            extra = sorted(set(folders) - set(classes))
            raise LatentDistillError(
                f"classes of {split_dir} differ from the training split (missing: {missing}, extra: {extra})"
            )
        files: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(folders):
            class_files = sorted(
                p for p in (split_dir / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not class_files:
                raise LatentDistillError(f"class folder {split_dir / name} holds no images ({'|'.join(IMAGE_EXTENSIONS)})")
            files += class_files
            labels += [label] * len(class_files)
        return cls(root, split, tuple(folders), tuple(files), tuple(labels))

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """A hash of relative paths and file sizes: changes when files are added, removed or replaced."""
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(f"{path.relative_to(self.root)}:{path.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]


def read_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB whatever its mode (transparency over white); a one-line error naming the
    file when it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise LatentDistillError(f"cannot read image {path}: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


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
                f"class '{classes[label] if classes else label}' has {len(rows)} images: too few to carve {per_class} validation images "
                "(lower data.val_per_class)"
            )
        validation.append(rows[torch.randperm(len(rows), generator=generator)[:per_class]])
    validation_rows = torch.cat(validation).sort().values if validation else torch.empty(0, dtype=torch.long)
    is_train = torch.ones(len(labels), dtype=torch.bool)
    is_train[validation_rows] = False
    return is_train.nonzero().flatten(), validation_rows
