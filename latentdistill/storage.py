"""What a distilled file costs to store, per class: the per-byte side of a comparison the field also makes
per image (IDC, HaBa, AutoPalette count bytes; a latent is smaller than an image).

Counted: what a set stores per image besides its class, at the dtypes the file stores it: ``latents``,
``soft_labels``, ``embeddings``. Not counted: hard labels (an image set of the same size needs the same
ones; the field does not count them), the decoded images (the decoder makes them from the latents; the
field counts neither them nor the decoder's weights) and the scalars a distillation learns (a learning
rate). Read from the file's header and labels only, so any safetensors file with these tensors is measured.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

from latentdistill.errors import LatentDistillError

COUNTED_TENSORS = ("latents", "soft_labels", "embeddings")
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
                "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def stored_tensors(path: str | Path) -> dict[str, tuple[str, list[int]]]:
    """Each tensor's dtype (torch's name, e.g. ``float16``) and shape as the file stores them (header only)."""
    with safe_open(path, framework="pt") as file:
        return {key: (_DTYPE_NAMES.get(file.get_slice(key).get_dtype(), file.get_slice(key).get_dtype().lower()),
                      list(file.get_slice(key).get_shape())) for key in file.keys()}


def storage_per_class(path: str | Path) -> dict:
    """The bytes a distilled file stores per class and their uint8-image equivalent: ``per_class`` (class name ->
    counted bytes), ``parts`` (tensor -> bytes per class, mean over classes, hard labels included for the
    record), ``mean_bytes_per_class`` (counted), ``image_bytes`` (one uint8 image of the set's size) and
    ``image_equivalent`` (counted bytes / image bytes)."""
    with safe_open(path, framework="pt") as file:
        sizes = {}
        for key in file.keys():
            part = file.get_slice(key)
            sizes[key] = (_DTYPE_BYTES.get(part.get_dtype(), 0), list(part.get_shape()))
        labels = file.get_tensor("labels") if "labels" in sizes else None
        classes = json.loads((file.metadata() or {}).get("classes", "[]"))
    if labels is None or labels.dim() != 1:
        raise LatentDistillError(f"{path} has no 'labels' tensor to count bytes per class")
    return storage_of(sizes, labels, classes)


def storage_of_tensors(tensors: dict[str, torch.Tensor], labels: torch.Tensor, classes: list[str],
                       stored_dtypes: dict[str, str] | None = None) -> dict:
    """``storage_per_class`` of tensors in memory (a set read from another format), each counted at the dtype
    ``stored_dtypes`` names (as its source stored it) or its own."""
    stored_dtypes = stored_dtypes or {}
    sizes = {}
    for name, tensor in tensors.items():
        dtype = getattr(torch, stored_dtypes.get(name, ""), None) or tensor.dtype
        sizes[name] = (torch.empty(0, dtype=dtype).element_size(), list(tensor.shape))
    return storage_of(sizes, labels, classes)


def storage_of(sizes: dict[str, tuple[int, list[int]]], labels: torch.Tensor, classes: list[str]) -> dict:
    """The storage record from each tensor's (bytes per value, shape). A set without latents stores its
    images: then they are what is counted."""
    counted_names = COUNTED_TENSORS if "latents" in sizes else ("images", "soft_labels")
    counts = torch.bincount(labels.long(), minlength=len(classes))
    per_row = {name: size * math.prod(shape[1:]) for name, (size, shape) in sizes.items()
               if name in ("latents", "labels", *counted_names)}
    counted = sum(size for name, size in per_row.items() if name in counted_names)
    names = classes if len(classes) == len(counts) else [str(c) for c in range(len(counts))]
    per_class = {names[c]: int(counts[c]) * counted for c in range(len(counts))}
    total_classes = max(1, len(counts))
    parts = {name: round(int(counts.sum()) * size / total_classes, 2) for name, size in per_row.items()}
    mean = sum(per_class.values()) / total_classes
    image_bytes = math.prod(sizes["images"][1][1:]) if "images" in sizes else None
    return {"per_class": per_class, "parts": parts, "mean_bytes_per_class": round(mean, 2), "image_bytes": image_bytes,
            "image_equivalent": round(mean / image_bytes, 4) if image_bytes else None,
            "counted": [name for name in counted_names if name in per_row],
            "not_counted": "hard labels, decoded images, the decoder's weights, learned scalars"
            if "latents" in sizes else "hard labels, learned scalars"}


def latents_in_storage(storage_ipc: int, image_shape: tuple[int, ...], latent_shape: tuple[int, ...],
                       label_values: int = 0) -> int:
    """How many latents (fp16) fit per class in the bytes of ``storage_ipc`` uint8 images of ``image_shape``,
    each latent with ``label_values`` soft-label values (fp16) beside it (``distill.storage_ipc``)."""
    budget = storage_ipc * math.prod(image_shape)
    per_latent = 2 * (math.prod(latent_shape) + label_values)
    count = budget // per_latent
    if count < 1:
        raise LatentDistillError(f"config key 'distill.storage_ipc': {storage_ipc} image(s) of {budget} bytes per class "
                                 f"hold no latent of {per_latent} bytes")
    return count
