"""The distilled-dataset file: one ``.safetensors`` holding the tensors and a metadata record.

Tensors: ``latents`` (N, C, h, w) float32 (float16 for a storage-matched set, ``distill.storage_ipc``),
``labels`` (N,) int64, optional ``embeddings`` (N, ...) (the learnt conditioning of prior ``diffusion``),
optional ``soft_labels`` (N, classes), a probability row per image (DATM's learned labels), and
``images`` (N, 3, H, W) uint8 (decoded). Metadata (string -> JSON): format version, task, class names,
autoencoder and prior specs, the resolved config, seed and package versions (files written by earlier
versions may also hold an ``evaluation``; evaluation now writes its own report and never this file). No pickle: anyone can open it with safetensors alone.
"""

from __future__ import annotations

import io
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_save_file, atomic_write_bytes
from latentdistill.storage import storage_per_class, stored_tensors

FORMAT_VERSION = 1
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
    latents: torch.Tensor | None  # None: a set of images only (made by another method, ``export.sets``)
    labels: torch.Tensor
    images: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    metadata: dict = field(default_factory=dict)
    soft_labels: torch.Tensor | None = None  # (N, classes) probabilities, rows summing to 1

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.get("classes", []))

    @property
    def ipc(self) -> int:
        counts = torch.bincount(self.labels)
        return int(counts.max()) if len(counts) else 0


def write_distilled(path: str | Path, distilled: DistilledSet) -> None:
    """Validate and write atomically: a crash leaves the previous file (or none), never half of one.

    The checks are those of ``read_distilled``, so a set with NaN latents (a run that diverged) or metadata
    that no reader understands is refused here and nothing is written."""
    if distilled.latents is None:
        raise LatentDistillError(f"{path}: a distilled file holds latents; write a set of images only with "
                                 "'latentdistill export --to imagefolder'")
    validate(distilled, Path(path))
    # float16 is kept where the set chose it (storage-matched budgets count bytes); anything else is float32.
    keep = (torch.float16, torch.float32)
    latents = distilled.latents.detach().cpu()
    tensors = {"latents": (latents if latents.dtype in keep else latents.float()).contiguous(),
               "labels": distilled.labels.cpu().long()}
    if distilled.soft_labels is not None:
        soft = distilled.soft_labels.detach().cpu()
        tensors["soft_labels"] = (soft if soft.dtype in keep else soft.float()).contiguous()
    if distilled.images is not None:
        tensors["images"] = distilled.images.cpu().contiguous()
    if distilled.embeddings is not None:
        tensors["embeddings"] = distilled.embeddings.detach().cpu().float().contiguous()
    metadata = {key: json.dumps(value) for key, value in distilled.metadata.items()}
    atomic_save_file(tensors, path, metadata=metadata)


def read_distilled(path: str | Path) -> DistilledSet:
    """Read and validate a distilled file; every problem is a one-line error naming the file.

    Latents and embeddings of another float type are read as float32 and int32 labels as int64, the types
    ``write_distilled`` writes; labels of any other type (int8, uint8, bool, float) are refused, since a
    narrow or float type in a label tensor means a file that some other tool wrote, not one to guess at."""
    path = Path(path)
    if path.is_dir():
        raise LatentDistillError(f"{path} is a directory, not a distilled file")
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
    _validate_metadata(metadata, path)
    if metadata["format_version"] != FORMAT_VERSION:
        raise LatentDistillError(
            f"{path} has format version {metadata['format_version']}; this latentdistill reads version {FORMAT_VERSION}"
        )
    for name in ("latents", "embeddings", "soft_labels"):
        if name in tensors and tensors[name].is_floating_point() and tensors[name].dtype != torch.float32:
            tensors[name] = tensors[name].float()
    if tensors["labels"].dtype == torch.int32:
        tensors["labels"] = tensors["labels"].long()
    distilled = DistilledSet(
        tensors["latents"], tensors["labels"], tensors.get("images"), tensors.get("embeddings"), metadata,
        tensors.get("soft_labels"),
    )
    validate(distilled, path)
    return distilled


def describe_distilled(path: str | Path) -> str:
    """The text ``latentdistill info`` prints: the file, each tensor's shape and dtype, and the metadata.

    The file is read (and so validated) first; a long resolved config is cut at 200 characters. The
    metadata comes back from safetensors in no fixed order, so it is listed in one: the required keys
    first, then the others alphabetically."""
    distilled = read_distilled(path)
    lines = [f"file: {path}", "tensors:"]
    stored = stored_tensors(path)
    for name in ("latents", "labels", "soft_labels", "images", "embeddings"):
        if name in stored:
            dtype, shape = stored[name]
            lines.append(f"  {name}: {tuple(shape)} {dtype}")
    if distilled.soft_labels is not None:
        soft = distilled.soft_labels.float()
        agree = float((soft.argmax(1) == distilled.labels).float().mean()) * 100
        lines.append(f"  (soft labels: mean top probability {float(soft.max(1).values.mean()):.3f}, "
                     f"top class = hard label for {agree:.0f}% of the images)")
    storage = storage_per_class(path)
    if storage["image_bytes"]:
        lines.append(f"storage: {storage['mean_bytes_per_class']:.0f} bytes per class ({', '.join(storage['counted'])}), "
                     f"{storage['image_equivalent']:.2f} uint8 images of {storage['image_bytes']} bytes")
    lines.append("metadata:")
    metadata = distilled.metadata
    for key in [*REQUIRED_METADATA, *sorted(key for key in metadata if key not in REQUIRED_METADATA)]:
        text = json.dumps(metadata[key])
        if key == "config" and len(text) > 200:
            text = text[:200] + " ..."
        # A key is any string in safetensors; one with a line break or control character is shown quoted.
        lines.append(f"  {key if key.isprintable() else json.dumps(key)}: {text}")
    return "\n".join(lines)


def _validate_soft_labels(distilled: DistilledSet, n: int, path: Path) -> None:
    soft = distilled.soft_labels
    if soft is not None:
        classes = len(distilled.metadata.get("classes", []))
        if not soft.is_floating_point() or soft.dim() != 2 or soft.shape[0] != n or (classes and soft.shape[1] != classes):
            raise LatentDistillError(f"{path}: 'soft_labels' must be a float ({n}, {classes or 'classes'}) tensor, "
                                     f"one probability row per image, got {_shape(soft)}")
        if not bool(torch.isfinite(soft).all()) or bool((soft < 0).any()) or not torch.allclose(
                soft.double().sum(1), torch.ones(n, dtype=torch.float64), atol=1e-2):
            raise LatentDistillError(f"{path}: 'soft_labels' rows must be probabilities (finite, not negative, summing to 1)")


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).replace("torch.", "")


def _shape(tensor: torch.Tensor) -> str:
    return f"{_dtype_name(tensor)} {tuple(tensor.shape)}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _is_names(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# The metadata keys this package writes or reads, and the JSON type each must have: a file whose
# ``classes`` is a dict or whose ``format_version`` is "1" is refused at read, not met later by a TypeError.
_METADATA_TYPES = {
    "format_version": (_is_int, "an integer"),
    "task": (lambda value: isinstance(value, str), "a string"),
    "classes": (_is_names, "a list of class names (strings)"),
    "dataset": (lambda value: isinstance(value, str) or _is_names(value), "a name or a list of names (strings)"),
    "ipc": (_is_int, "an integer"),
    "seed": (_is_int, "an integer"),
    **{key: (lambda value: isinstance(value, dict), "a JSON object")
       for key in ("autoencoder", "prior", "config", "versions", "learned", "evaluation")},
    "zca": (lambda value: value is None or (isinstance(value, dict) and _is_positive(value.get("eps"))
                                            and isinstance(value.get("fingerprint"), str)),
            'null or {"eps": a positive number, "fingerprint": a string}'),
    "storage_ipc": (lambda value: _is_int(value) and value >= 1, "an integer of at least 1"),
    "normalization": (lambda value: isinstance(value, dict) and all(
        isinstance(value.get(k), list) and len(value[k]) == 3 and all(_is_positive(v) or v == 0 for v in value[k])
        for k in ("mean", "std")) and all(_is_positive(v) for v in value["std"]),
        '{"mean": 3 numbers, "std": 3 positive numbers}'),
}


def _validate_metadata(metadata: dict, path: Path) -> None:
    for key, (check, expected) in _METADATA_TYPES.items():
        if key in metadata and not check(metadata[key]):
            got = json.dumps(metadata[key])
            got = got if len(got) <= 60 else got[:60] + " ..."
            raise LatentDistillError(f"{path}: metadata key '{key}' must be {expected}, got {got}")
    learned = metadata.get("learned", {})
    if "synthetic_lr" in learned and not _is_positive(learned["synthetic_lr"]):
        raise LatentDistillError(f"{path}: metadata key 'learned.synthetic_lr' must be a positive number, "
                                 f"got {json.dumps(learned['synthetic_lr'])}")


def validate(distilled: DistilledSet, path: Path) -> None:
    """The checks shared by read and write; each names the tensor or metadata key, its dtype and shape.

    A set of images only (no latents, from another method) may hold float images in the 0-255 scale."""
    latents, labels, images, embeddings = distilled.latents, distilled.labels, distilled.images, distilled.embeddings
    if latents is None and images is None:
        raise LatentDistillError(f"{path} holds neither latents nor images")
    reference = latents if latents is not None else images
    if latents is not None and (latents.dim() != 4 or not latents.is_floating_point()):
        raise LatentDistillError(f"{path}: 'latents' must be a float (N, C, h, w) tensor, got {_shape(latents)}")
    n = len(reference)
    if n == 0:
        raise LatentDistillError(f"{path} holds no images ('{'latents' if latents is not None else 'images'}' is {_shape(reference)})")
    if latents is not None and 0 in latents.shape:
        raise LatentDistillError(f"{path}: 'latents' must be a float (N, C, h, w) tensor with no empty dimension, got {_shape(latents)}")
    if labels.shape != (n,) or labels.dtype not in (torch.int64, torch.int32):
        raise LatentDistillError(f"{path}: 'labels' must be an int64 ({n},) tensor, one per latent, got {_shape(labels)}")
    image_types = (torch.uint8,) if latents is not None else (torch.uint8, torch.float32)
    if images is not None and (images.dtype not in image_types or images.dim() != 4 or images.shape[0] != n
                               or images.shape[1] != 3 or 0 in images.shape):
        raise LatentDistillError(f"{path}: 'images' must be uint8 ({n}, 3, H, W) with H, W > 0, got {_shape(images)}")
    if images is not None and images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise LatentDistillError(f"{path}: 'images' holds non-finite values (NaN or infinity)")
    if embeddings is not None and (not embeddings.is_floating_point() or embeddings.dim() < 2
                                   or embeddings.shape[0] != n or 0 in embeddings.shape):
        raise LatentDistillError(f"{path}: 'embeddings' must be a float ({n}, ...) tensor, one row per image, got {_shape(embeddings)}")
    _validate_soft_labels(distilled, n, path)
    for name, tensor in (("latents", latents), ("embeddings", embeddings)):
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise LatentDistillError(f"{path}: '{name}' holds non-finite values (NaN or infinity)")
    missing = [key for key in REQUIRED_METADATA if key not in distilled.metadata]
    if missing:
        raise LatentDistillError(f"{path}: metadata key '{missing[0]}' is missing")
    _validate_metadata(distilled.metadata, path)
    task = distilled.metadata["task"]  # any task name: tasks are registered by name, also by user code
    if not task:
        raise LatentDistillError(f"{path}: metadata key 'task' is empty")
    classes = distilled.metadata["classes"]
    low, high = int(labels.min()), int(labels.max())
    if task == "classification" and (low < 0 or high >= len(classes)):
        raise LatentDistillError(f"{path}: labels fall outside the {len(classes)} classes named in the metadata")
    if low < 0:  # task sr: pseudo-classes, which count from 0 all the same
        raise LatentDistillError(f"{path}: labels must not be negative, got {low}")


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
