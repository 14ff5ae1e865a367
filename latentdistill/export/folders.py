"""Take a distilled set out of the package: an ImageFolder of lossless PNGs, or a Hugging Face ``datasets``
dataset, so any training script or hub user can read it without latentdistill.

Both are written into a hidden folder beside the target and renamed into place when complete: an
interrupted export leaves no half-made folder, and an existing folder is never overwritten.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from latentdistill.errors import LatentDistillError
from latentdistill.export import DistilledSet
from latentdistill.io import atomic_write_text, error_reason

TARGETS = ("imagefolder", "hf")


def export_set(distilled: DistilledSet, target: str, directory: str | Path, push_to_hub: str | None = None,
               progress: bool = True) -> Path:
    """Write ``distilled`` as ``target`` (``imagefolder`` or ``hf``) into the new folder ``directory``."""
    if target not in TARGETS:
        raise LatentDistillError(f"unknown export target '{target}' (known: {', '.join(TARGETS)})")
    if distilled.images is None:
        raise LatentDistillError("this set holds no decoded images to export")
    if push_to_hub and target != "hf":
        raise LatentDistillError("--push-to-hub needs --to hf")
    if "whitened" in distilled.metadata:
        raise LatentDistillError("this set's images are ZCA-whitened tensors: unwhiten them first (latentdistill export "
                                 "does so given --config for the real data)")
    unsafe = [name for name in distilled.classes if not _is_folder_name(name)]
    if unsafe:
        raise LatentDistillError(f"class name {unsafe[0]!r} cannot be a folder name (no '/', '\\', '..', NUL, "
                                 "leading '.' or empty name): nothing was written")
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise LatentDistillError(f"{directory} already exists and is not empty: choose another folder (nothing was overwritten)")
    images = _uint8(distilled.images)
    with _staging(directory) as staging:
        if target == "imagefolder":
            _write_image_folder(distilled, images, staging, progress)
        else:
            dataset = hf_dataset(distilled, images)
            dataset.save_to_disk(str(staging))
    if push_to_hub:
        try:
            dataset.push_to_hub(push_to_hub)
        except Exception as error:  # noqa: BLE001 - the hub client raises many types (offline, auth, name)
            raise LatentDistillError(f"{directory} was written; pushing it to the hub as {push_to_hub} failed: "
                                     f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    return directory


def _is_folder_name(name: str) -> bool:
    """A class name that is one plain path component, so its folder stays inside the export."""
    return bool(name) and not name.startswith(".") and not any(bad in name for bad in ("/", "\\", "\0"))


def _uint8(images: torch.Tensor) -> torch.Tensor:
    """PNGs hold uint8: float pixels (a set from another method) are rounded and clipped, and say so."""
    if images.dtype == torch.uint8:
        return images
    clipped = float(((images < 0) | (images > 255)).float().mean()) * 100
    print(f"note: float images rounded to uint8 for export ({clipped:.1f}% of the values clipped to 0..255)")
    return images.round().clamp(0, 255).to(torch.uint8)


@contextlib.contextmanager
def _staging(directory: Path):
    """A hidden sibling folder, renamed to ``directory`` when the body finishes, removed when it fails."""
    staging = directory.parent / f".{directory.name}.partial"
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()  # a leftover is refused, not deleted: it may be another export's, running now
    except FileExistsError:
        raise LatentDistillError(f"{staging} exists: another export into {directory} is running, or a killed one "
                                 "left it (delete it and run again)") from None
    except OSError as error:
        raise LatentDistillError(f"cannot write {directory}: {error_reason(error)}") from None
    try:
        yield staging
        if directory.exists():
            directory.rmdir()  # empty (checked before the work)
        os.replace(staging, directory)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise LatentDistillError(f"cannot write {directory}: {error_reason(error)}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def file_name(label_name: str, row: int) -> str:
    """Where row ``row`` of the set goes: its class folder, its row number (so the order reads back)."""
    return f"{label_name}/{row:05d}.png"


def _write_image_folder(distilled: DistilledSet, images: torch.Tensor, directory: Path, progress: bool) -> None:
    classes = distilled.classes
    soft = {}
    for name in classes:
        (directory / name).mkdir()  # every class, even one with no image: the folders name the classes
    for row in tqdm(range(len(images)), desc="writing PNGs", disable=not progress, leave=False):
        name = file_name(classes[int(distilled.labels[row])], row)
        Image.fromarray(images[row].permute(1, 2, 0).numpy()).save(directory / name, format="PNG")
        if distilled.soft_labels is not None:
            soft[name] = [float(value) for value in distilled.soft_labels[row]]
    if soft:
        atomic_write_text(directory / "labels.json", json.dumps({"classes": classes, "soft_labels": soft}))
    metadata = {key: value for key, value in distilled.metadata.items() if key != "notes"}
    atomic_write_text(directory / "metadata.json", json.dumps(metadata, indent=2))


def hf_dataset(distilled: DistilledSet, images: torch.Tensor | None = None):
    """The set as a ``datasets.Dataset``: ``image`` and ``label`` (a ClassLabel with the class names), and
    ``soft_label`` when the set has soft labels; the metadata as JSON in the dataset's description."""
    try:
        import datasets
    except ImportError:
        raise LatentDistillError("--to hf needs the datasets package: pip install 'latentdistill[hf]'") from None
    images = _uint8(distilled.images) if images is None else images
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=distilled.classes)}
    columns = {"image": [_png(image) for image in images], "label": distilled.labels.tolist()}
    if distilled.soft_labels is not None:
        features["soft_label"] = datasets.Sequence(datasets.Value("float32"))
        columns["soft_label"] = distilled.soft_labels.float().tolist()
    features = datasets.Features(features)
    info = datasets.DatasetInfo(description=json.dumps({k: v for k, v in distilled.metadata.items() if k != "notes"}),
                                features=features)
    return datasets.Dataset.from_dict(columns, features=features, info=info)


def _png(image: torch.Tensor) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}
