"""Read a distilled set that any method made, so every set is judged by the same protocol.

Besides our own ``.safetensors`` files, ``latentdistill evaluate`` reads:

- ``imagefolder``: ``DIR/<class>/*.png|jpg`` (our ``export --to imagefolder`` writes this, with
  ``labels.json`` for soft labels and ``metadata.json``, both read back when present);
- ``images``: a safetensors file with ``images`` (uint8 N x 3 x H x W, or float with the normalisation named)
  and ``labels`` (N hard labels, or N x C soft ones), no latents;
- ``mtt``: the tensors MTT and DATM release, ``images_best.pt`` with ``labels_best.pt`` beside it (read with
  ``torch.load(weights_only=True)``: tensors only, never a pickled object). They are normalised, and whitened
  with ``--zca``.

Every reader returns a ``DistilledSet`` without latents whose images are in the pixel scale the evaluation
trains on (0-255; floats are kept unrounded and unclipped, since an optimised float image is not a photo).
A whitened set cannot be unwhitened here (that needs the real data's ZCA), so it keeps its tensors and says
so in ``metadata["whitened"]``; ``unwhiten`` finishes the job once the real data is prepared.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from latentdistill.data.image_folder import ImageFolder, read_rgb
from latentdistill.errors import LatentDistillError
from latentdistill.export import FORMAT_VERSION, DistilledSet, read_distilled, validate
from latentdistill.io import read_json_object
from latentdistill.runtime import named_statistics
from latentdistill.storage import storage_of_tensors, storage_per_class

FORMATS = ("auto", "distilled", "imagefolder", "images", "mtt")


@dataclass(frozen=True)
class SetSource:
    """How to read a set: its format, and for float tensors the normalisation (``unit`` for [0, 1], a named
    statistic such as ``cifar10``, or ``MEAN/STD`` lists) and the ZCA eps they were whitened with."""

    format: str = "auto"
    normalization: str | None = None
    zca_eps: float | None = None
    labels: str | None = None  # mtt: the labels file (default: labels_best.pt beside the images)


def detect_format(path: Path) -> str:
    """The format a path holds: a folder of class folders, MTT's tensors, or a safetensors file."""
    if path.is_dir():
        return "mtt" if (path / "images_best.pt").is_file() else "imagefolder"
    if path.suffix == ".pt":
        return "mtt"
    try:
        with safe_open(path, framework="pt") as file:
            keys, metadata = set(file.keys()), file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise LatentDistillError(f"{path} is not a readable safetensors file ({str(error).splitlines()[0]})") from None
    return "distilled" if "latents" in keys and "format_version" in metadata else "images"


def read_set(path: str | Path, source: SetSource, classes: list[str], resolution: int) -> DistilledSet:
    """The set at ``path`` for a dataset with ``classes`` at ``resolution``: class names and order, label range,
    image size and finite values checked, each problem one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise LatentDistillError(f"distilled set not found: {path}")
    if source.format not in FORMATS:
        raise LatentDistillError(f"unknown set format '{source.format}' (known: {', '.join(FORMATS)})")
    if source.zca_eps is not None and not (math.isfinite(source.zca_eps) and source.zca_eps > 0):
        raise LatentDistillError(f"--zca must be a positive eps (MTT: 0.1), got {source.zca_eps}")
    kind = detect_format(path) if source.format == "auto" else source.format
    if kind == "distilled":
        return read_distilled(path)
    if kind == "imagefolder":
        distilled = _read_image_folder(path, classes, resolution)
    else:
        images, labels, named = _read_tensors(path, kind, source)
        distilled = _from_tensors(path, images, labels, named, source, classes, resolution)
    distilled.metadata.setdefault("source", {"format": kind, "path": str(path)})
    validate(distilled, path)
    return distilled


def _read_tensors(path: Path, kind: str, source: SetSource) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    if kind == "mtt":
        images_path = path / "images_best.pt" if path.is_dir() else path
        labels_path = Path(source.labels) if source.labels else images_path.parent / "labels_best.pt"
        return _load_tensor(images_path), _load_tensor(labels_path), None
    try:
        with safe_open(path, framework="pt") as file:
            tensors = {key: file.get_tensor(key) for key in ("images", "labels") if key in file.keys()}
            classes = json.loads((file.metadata() or {}).get("classes", "null"))
    except (SafetensorError, OSError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise LatentDistillError(f"{path} is not a readable image set ({str(error).splitlines()[0]})") from None
    missing = [key for key in ("images", "labels") if key not in tensors]
    if missing:
        raise LatentDistillError(f"{path} has no '{missing[0]}' tensor (an image set holds 'images' and 'labels')")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise LatentDistillError(f"{path}: metadata 'classes' must be a list of class names")
    return tensors["images"], tensors["labels"], classes


def _load_tensor(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise LatentDistillError(f"tensor file not found: {path}")
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load raises many types for a bad or unsafe file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if reason.startswith("Weights only load failed"):  # torch's long explanation of its safe loader
            reason = "not a torch.save file of tensors only"
        raise LatentDistillError(f"{path} is not a tensor file torch.load(weights_only=True) reads ({reason[:120]})") from None
    if not isinstance(value, torch.Tensor):
        raise LatentDistillError(f"{path} holds a {type(value).__name__}, not a tensor")
    return value.detach()  # a saved nn.Parameter comes back requiring gradients


def _from_tensors(path: Path, images: torch.Tensor, labels: torch.Tensor, named: list[str] | None, source: SetSource,
                  classes: list[str], resolution: int) -> DistilledSet:
    """Check shapes, labels and values; bring float images to the 0-255 pixel scale (unless whitened)."""
    if images.dim() != 4 or images.shape[1] != 3 or 0 in images.shape:
        raise LatentDistillError(f"{path}: images must be (N, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-2:] != (resolution, resolution):
        raise LatentDistillError(f"{path} holds {tuple(images.shape[-2:])} images; config key 'data.resolution' is "
                                 f"{resolution}")
    notes = []
    if named is not None and list(named) != list(classes):
        raise LatentDistillError(f"{path} names classes {named}; the real data has {classes}")
    if named is None:
        notes.append(f"{path} names no classes: label i is taken as the real data's class {classes[0]!r}, ... (sorted folders)")
    hard, soft = _labels(path, labels, len(images), len(classes))
    metadata = {"format_version": FORMAT_VERSION, "task": "classification", "classes": list(classes), "notes": notes}
    if images.dtype == torch.uint8:
        if source.normalization or source.zca_eps is not None:
            raise LatentDistillError(f"{path} holds uint8 images: --normalization and --zca are for float tensors")
        pixels = images
    elif images.is_floating_point():
        pixels = images.float()
        if not bool(torch.isfinite(pixels).all()):
            raise LatentDistillError(f"{path}: images hold non-finite values (NaN or infinity)")
        if source.normalization is None:
            raise LatentDistillError(f"{path} holds float images: say how they are normalised with --normalization "
                                     "(unit for [0, 1], cifar10, cifar100, imagenet, or MEAN/STD such as 0.5,0.5,0.5/0.5,0.5,0.5)")
        mean, std = named_statistics(source.normalization)
        if source.zca_eps is not None:
            metadata["whitened"] = {"mean": mean, "std": std, "eps": source.zca_eps}
            metadata["zca"] = {"eps": source.zca_eps, "fingerprint": "stated with --zca"}
        else:
            pixels = _to_pixels(pixels, mean, std)
            metadata["zca"] = None  # stated as not whitened: evaluated without ZCA, whatever data.zca says
    else:
        raise LatentDistillError(f"{path}: images must be uint8 or float, got {str(images.dtype).replace('torch.', '')}")
    metadata["storage_dtype"] = str(images.dtype).replace("torch.", "")
    return DistilledSet(None, hard, pixels, None, metadata, soft)


def _labels(path: Path, labels: torch.Tensor, count: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hard labels (N,) in range, or soft ones (N, C): probability rows (renormalised), or logits (DATM stores
    logits, which its soft cross-entropy passes through a softmax) turned into probabilities. Returns (hard, soft
    or None)."""
    if labels.dim() == 1 and labels.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        if len(labels) != count:
            raise LatentDistillError(f"{path}: {len(labels)} labels for {count} images")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise LatentDistillError(f"{path}: labels fall outside the real data's {num_classes} classes "
                                     f"(found {int(labels.min())}..{int(labels.max())})")
        return labels.long(), None
    if labels.dim() == 2 and labels.is_floating_point():
        if labels.shape != (count, num_classes):
            raise LatentDistillError(f"{path}: soft labels must be ({count}, {num_classes}), got {tuple(labels.shape)}")
        values = labels.double()
        if not bool(torch.isfinite(values).all()):
            raise LatentDistillError(f"{path}: labels hold non-finite values (NaN or infinity)")
        # probabilities as another tool stored them (bf16, fp16: sums a little off 1), or logits
        is_probability = bool((values >= -1e-6).all()) and bool(((values.sum(1) - 1).abs() <= 1e-2).all())
        soft = values.clamp(min=0) / values.clamp(min=0).sum(1, keepdim=True) if is_probability else values.softmax(dim=1)
        return soft.argmax(dim=1), soft.float()
    raise LatentDistillError(f"{path}: labels must be integer (N,) (int8-64 or uint8) or float (N, classes), got "
                             f"{str(labels.dtype).replace('torch.', '')} {tuple(labels.shape)}")


def _to_pixels(normalized: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    return (normalized * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)) * 255


def unwhiten(distilled: DistilledSet, zca) -> torch.Tensor:
    """A whitened set's images in the pixel scale, through the inverse of ``zca`` (the real data's fit, which
    stands in for the one the set was made with: the report says so)."""
    whitened = distilled.metadata["whitened"]
    flat = distilled.images.double().flatten(1) @ torch.linalg.inv(zca.matrix.double()) + zca.mean.double()
    return _to_pixels(flat.view_as(distilled.images).float(), whitened["mean"], whitened["std"])


def set_storage(distilled: DistilledSet, source: Path) -> dict:
    """What a set stores per class: read from our file's header, or counted from a set of images at the dtype
    its source stored them in (an MTT tensor of float32 images costs four uint8 images each)."""
    if distilled.latents is not None:
        return storage_per_class(source)
    tensors = {"images": distilled.images}
    if distilled.soft_labels is not None:
        tensors["soft_labels"] = distilled.soft_labels
    stored = {"images": distilled.metadata.get("storage_dtype", "uint8")}
    return storage_of_tensors(tensors, distilled.labels, distilled.classes, stored)


# What metadata.json (our ImageFolder export) may carry back into an evaluation: the keys ``validate`` checks and
# the record keys. How the images are stored is never read from it: they are PNGs, uint8 pixels.
_FOLDER_METADATA = ("dataset", "ipc", "seed", "autoencoder", "prior", "config", "versions", "learned", "zca", "storage_ipc",
                    "distill_iterations", "distill_minutes", "normalization")


def _read_image_folder(path: Path, classes: list[str], resolution: int) -> DistilledSet:
    """``DIR/<class>/*``: the folders must be the real data's classes (a class may be empty of images but
    not missing); ``labels.json`` (soft labels by file) and ``metadata.json`` are read when present."""
    folder = ImageFolder.scan(path.parent, path.name, allow_empty=True)
    if list(folder.classes) != list(classes):
        raise LatentDistillError(f"{path} has class folders {list(folder.classes)}; the real data has {classes}")
    images = torch.empty(len(folder.files), 3, resolution, resolution, dtype=torch.uint8)
    for row, file in enumerate(folder.files):
        image = read_rgb(file)
        if image.size != (resolution, resolution):
            raise LatentDistillError(f"{file} is {image.size[0]}x{image.size[1]}; config key 'data.resolution' is {resolution}")
        images[row] = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3).permute(2, 0, 1)
    saved = read_json_object(path / "metadata.json", "metadata file") if (path / "metadata.json").is_file() else {}
    metadata = {key: saved[key] for key in _FOLDER_METADATA if key in saved}
    metadata.update({"format_version": FORMAT_VERSION, "task": "classification", "classes": list(classes)})
    soft = None
    if (path / "labels.json").is_file():
        names = [file.relative_to(path).as_posix() for file in folder.files]
        rows = _soft_label_rows(path / "labels.json", names, len(classes))
        soft = _labels(path / "labels.json", torch.tensor(rows, dtype=torch.float64), len(names), len(classes))[1]
    return DistilledSet(None, torch.tensor(folder.labels, dtype=torch.long), images, None, metadata, soft)


def _soft_label_rows(path: Path, names: list[str], num_classes: int) -> list[list[float]]:
    """``labels.json``'s ``soft_labels``: one row of ``num_classes`` numbers per image file, checked before use."""
    rows = read_json_object(path, "labels file").get("soft_labels")
    if not isinstance(rows, dict):
        raise LatentDistillError(f"{path}: 'soft_labels' must map each image file to its row of {num_classes} numbers")
    for name in names:
        row = rows.get(name)
        if row is None:
            raise LatentDistillError(f"{path} has no soft label for {name}")
        if not isinstance(row, list) or len(row) != num_classes or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            raise LatentDistillError(f"{path}: the soft label of {name} must be {num_classes} numbers")
    return [rows[name] for name in names]
