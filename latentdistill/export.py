"""The distilled-dataset file: one ``.safetensors`` holding the tensors and a metadata record.

Tensors: ``latents`` (N, C, h, w) float32, ``labels`` (N,) int64, optional ``embeddings`` (N, ...)
(the learnt conditioning of prior ``diffusion``) and
``images`` (N, 3, H, W) uint8 (decoded). Metadata (string -> JSON): format version, task, class names,
autoencoder and prior specs, the resolved config, seed, package versions and, once evaluated, the
results. No pickle: anyone can open it with safetensors alone.
"""

from __future__ import annotations

import io
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_save_file, atomic_write_bytes

FORMAT_VERSION = 1
TASKS = ("classification", "sr")
REQUIRED_METADATA = ("format_version", "task", "classes")


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("latentdistill", "torch", "diffusers", "safetensors", "accelerate", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


@dataclass
class DistilledSet:
    latents: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.get("classes", []))

    @property
    def ipc(self) -> int:
        counts = torch.bincount(self.labels)
        return int(counts.max()) if len(counts) else 0


def write_distilled(path: str | Path, distilled: DistilledSet) -> None:
    """Validate and write atomically: a crash leaves the previous file (or none), never half of one."""
    _validate(distilled, Path(path))
    tensors = {"latents": distilled.latents.detach().cpu().float().contiguous(), "labels": distilled.labels.cpu().long()}
    if distilled.images is not None:
        tensors["images"] = distilled.images.cpu().contiguous()
    if distilled.embeddings is not None:
        tensors["embeddings"] = distilled.embeddings.detach().cpu().float().contiguous()
    metadata = {key: json.dumps(value) for key, value in distilled.metadata.items()}
    atomic_save_file(tensors, path, metadata=metadata)


def read_distilled(path: str | Path) -> DistilledSet:
    """Read and validate a distilled file; every problem is a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise LatentDistillError(f"distilled file not found: {path}")
    try:
        with safe_open(path, framework="pt") as file:
            raw = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise LatentDistillError(f"{path} is not a readable safetensors file ({str(error).splitlines()[0]})") from None
    try:
        metadata = {key: json.loads(value) for key, value in raw.items()}
    except json.JSONDecodeError:
        raise LatentDistillError(f"{path} has metadata that is not JSON: not a latentdistill file") from None
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing or "latents" not in tensors or "labels" not in tensors:
        what = f"metadata key '{missing[0]}'" if missing else "tensor 'latents' or 'labels'"
        raise LatentDistillError(f"{path} is not a latentdistill distilled file (missing {what})")
    if metadata["format_version"] != FORMAT_VERSION:
        raise LatentDistillError(
            f"{path} has format version {metadata['format_version']}; this latentdistill reads version {FORMAT_VERSION}"
        )
    distilled = DistilledSet(
        tensors["latents"], tensors["labels"], tensors.get("images"), tensors.get("embeddings"), metadata
    )
    _validate(distilled, path)
    return distilled


def _validate(distilled: DistilledSet, path: Path) -> None:
    n = len(distilled.latents)
    if distilled.latents.dim() != 4 or not distilled.latents.is_floating_point():
        raise LatentDistillError(f"{path}: 'latents' must be a float (N, C, h, w) tensor, got {tuple(distilled.latents.shape)}")
    if distilled.labels.shape != (n,) or distilled.labels.is_floating_point():
        raise LatentDistillError(f"{path}: 'labels' must be an integer ({n},) tensor, got {tuple(distilled.labels.shape)}")
    if distilled.images is not None:
        images = distilled.images
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] != n or images.shape[1] != 3:
            raise LatentDistillError(f"{path}: 'images' must be uint8 ({n}, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    embeddings = distilled.embeddings
    if embeddings is not None and (not embeddings.is_floating_point() or embeddings.dim() < 2 or embeddings.shape[0] != n):
        raise LatentDistillError(f"{path}: 'embeddings' must be a float ({n}, ...) tensor, one row per image, got {tuple(embeddings.shape)}")
    task = distilled.metadata.get("task")
    if task not in TASKS:
        raise LatentDistillError(f"{path}: unknown task '{task}' (known: {', '.join(TASKS)})")
    classes = distilled.metadata.get("classes", [])
    if task == "classification" and n and (int(distilled.labels.min()) < 0 or int(distilled.labels.max()) >= len(classes)):
        raise LatentDistillError(f"{path}: labels fall outside the {len(classes)} classes named in the metadata")


class DistilledDataset(Dataset):
    """The decoded images of a distilled file as (image float [0, 1], label) pairs."""

    def __init__(self, distilled: DistilledSet):
        if distilled.images is None:
            raise LatentDistillError("this distilled file holds no decoded images; decode its latents first")
        self.distilled = distilled
        self.classes = distilled.classes

    def __len__(self) -> int:
        return len(self.distilled.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.distilled.images[index].float() / 255, int(self.distilled.labels[index])


def load_distilled(path: str | Path) -> DistilledDataset:
    """Open a distilled file as a torch ``Dataset`` of decoded images and labels."""
    return DistilledDataset(read_distilled(path))


def save_grid(images: torch.Tensor, labels: torch.Tensor, path: str | Path, scale: int = 2) -> None:
    """A PNG with one row per class (uint8 images), upscaled ``scale`` times for viewing."""
    classes = labels.unique().tolist()
    per_row = max(int((labels == c).sum()) for c in classes)
    height, width = images.shape[-2:]
    canvas = torch.full((3, len(classes) * (height + 2), per_row * (width + 2)), 255, dtype=torch.uint8)
    for row, label in enumerate(classes):
        for column, image in enumerate(images[labels == label]):
            top, left = row * (height + 2) + 1, column * (width + 2) + 1
            canvas[:, top : top + height, left : left + width] = image
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
