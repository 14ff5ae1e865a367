"""The latent cache: one split's images, labels and latents in safetensors shards.

Encoding CIFAR-10 with an autoencoder takes minutes on a CPU; every later run reads the cache in
seconds. The cache records what built it (autoencoder spec, resolution, dataset fingerprint) and is
refused, not silently reused, when a run asks for something else. Shards are written one at a time,
atomically, so an interrupted encode resumes at the first missing shard.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from latentdistill.data.image_folder import ImageFolder, load_images
from latentdistill.errors import LatentDistillError
from latentdistill.io import atomic_save_file, atomic_write_text, display_path, error_reason

CACHE_FORMAT = 1
META_FILE = "meta.json"


@dataclass
class LatentCache:
    """A loaded cache. ``latents`` is None for image-only caches (e.g. a test split)."""

    directory: Path
    meta: dict
    images: torch.Tensor  # (N, 3, R, R) uint8
    labels: torch.Tensor  # (N,) int64
    latents: torch.Tensor | None  # (N, C, h, w) float32

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @classmethod
    def load(cls, directory: str | Path) -> LatentCache:
        directory = Path(directory)
        meta = _read_meta(directory)
        if meta is None or not meta.get("complete"):
            raise LatentDistillError(
                f"latent cache {display_path(directory)} is missing or incomplete: run `latentdistill encode` first"
            )
        parts: dict[str, list[torch.Tensor]] = {"images": [], "labels": [], "latents": []}
        for shard in meta["shards"]:
            tensors = _read_shard(directory / shard["file"])
            for key in parts:
                if key in tensors:
                    parts[key].append(tensors[key])
        images = torch.cat(parts["images"]) if parts["images"] else torch.empty(0, 3, meta["resolution"], meta["resolution"], dtype=torch.uint8)
        labels = torch.cat(parts["labels"]) if parts["labels"] else torch.empty(0, dtype=torch.long)
        latents = torch.cat(parts["latents"]) if parts["latents"] else None
        return cls(directory, meta, images, labels, latents)


def _read_meta(directory: Path) -> dict | None:
    path = directory / META_FILE
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = None
    except OSError as error:
        message = f"cannot read latent cache record {display_path(path)}: {error_reason(error)}"
        raise LatentDistillError(message) from None
    if not _meta_is_sound(meta):
        raise LatentDistillError(
            f"latent cache record {display_path(path)} is corrupt; "
            f"delete the folder {display_path(directory)} to rebuild it"
        )
    return meta


def _meta_is_sound(meta) -> bool:
    """The fields later code indexes have the right shapes; shard files are plain names inside the folder."""
    if not isinstance(meta, dict):
        return False
    shards, skipped = meta.get("shards"), meta.get("skipped")
    return (
        isinstance(shards, list)
        and isinstance(skipped, list)
        and all(isinstance(entry, list) and entry and isinstance(entry[0], str) for entry in skipped)
        and all(
            isinstance(shard, dict) and isinstance(shard.get("file"), str) and shard["file"] == Path(shard["file"]).name
            and shard["file"] not in ("", ".", "..")
            for shard in shards
        )
    )


def _read_shard(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        message = f"cache shard {display_path(path)} is unreadable ({error_reason(error)}); delete it to re-encode"
        raise LatentDistillError(message) from None


def encode_dataset(
    folder: ImageFolder,
    autoencoder,
    resolution: int,
    directory: str | Path,
    shard_size: int = 10000,
    batch_size: int = 500,
    skip_bad: bool = False,
    progress: bool = True,
) -> LatentCache:
    """Read, resize and (if ``autoencoder`` is given) encode one split into a cache folder.

    Reuses a complete cache built from the same inputs, resumes a partial one, and refuses one built
    from other inputs.

    Long on purpose: checking, resuming and writing the shards are one sequence of file states, read in order.
    """
    directory = Path(directory)
    spec = autoencoder.spec() if autoencoder is not None else None
    if autoencoder is not None and resolution % autoencoder.downscale:
        raise LatentDistillError(
            f"config key 'data.resolution' is {resolution}: it must be a multiple of the autoencoder's "
            f"downscale factor {autoencoder.downscale}"
        )
    _check_memory(folder, autoencoder, resolution)
    wanted = {
        "format": CACHE_FORMAT,
        "root": display_path(folder.root),
        "split": folder.split,
        "classes": list(folder.classes),
        "resolution": resolution,
        "fingerprint": folder.fingerprint(),
        "autoencoder": spec,
        "shard_size": shard_size,
    }
    meta = _read_meta(directory)
    if meta is not None:
        for key in ("format", "fingerprint", "resolution", "autoencoder", "shard_size", "classes"):
            if meta.get(key) != wanted[key]:
                raise LatentDistillError(
                    f"latent cache {display_path(directory)} was built with {key}={json.dumps(meta.get(key))}, this run asks for "
                    f"{key}={json.dumps(wanted[key])}: set cache.dir to another folder or delete that one"
                )
        # A shard file deleted by hand (e.g. an unreadable one) is encoded again, with every shard after it.
        present = 0
        while present < len(meta["shards"]) and (directory / meta["shards"][present]["file"]).is_file():
            present += 1
        if present < len(meta["shards"]):
            dropped = {display_path(path) for path in folder.files[present * shard_size :]}
            meta["shards"] = meta["shards"][:present]
            meta["skipped"] = [entry for entry in meta["skipped"] if entry[0] not in dropped]
            meta["complete"] = False
        if meta.get("complete"):
            return _check_classes(LatentCache.load(directory), folder)
    else:
        meta = {**wanted, "shards": [], "skipped": [], "complete": False}
    atomic_write_text(directory / META_FILE, json.dumps(meta, indent=1))

    num_shards = max(1, -(-len(folder) // shard_size))
    done = len(meta["shards"])
    bar = tqdm(total=len(folder), initial=min(done * shard_size, len(folder)), desc=f"encoding {folder.split}",
               disable=not progress, unit="img")
    for shard_index in range(done, num_shards):
        start, stop = shard_index * shard_size, min((shard_index + 1) * shard_size, len(folder))
        paths = folder.files[start:stop]
        parts, latent_parts, kept, bad = [], [], [], []
        for offset in range(0, len(paths), batch_size):  # read and encode a batch at a time: the bar moves per batch
            images, batch_kept, batch_bad = load_images(paths[offset : offset + batch_size], resolution,
                                                        skip_bad=skip_bad, progress=False)
            parts.append(images)
            kept += [offset + i for i in batch_kept]
            bad += batch_bad
            if autoencoder is not None and len(images):
                latent_parts.append(autoencoder.encode_batched(images.float() / 255, batch_size=batch_size).float())
            bar.update(min(batch_size, len(paths) - offset))
        images = torch.cat(parts) if parts else torch.empty(0, 3, resolution, resolution, dtype=torch.uint8)
        labels = torch.tensor([folder.labels[start + i] for i in kept], dtype=torch.long)
        tensors = {"images": images, "labels": labels, "indices": torch.tensor([start + i for i in kept], dtype=torch.long)}
        if latent_parts:
            tensors["latents"] = torch.cat(latent_parts).contiguous()
        name = f"shard-{shard_index:05d}.safetensors"
        atomic_save_file(tensors, directory / name)
        meta["shards"].append({"file": name, "count": len(kept)})
        meta["skipped"] += [[display_path(path), reason] for path, reason in bad]
        meta["complete"] = shard_index == num_shards - 1
        atomic_write_text(directory / META_FILE, json.dumps(meta, indent=1))
    bar.close()
    return _check_classes(LatentCache.load(directory), folder)


def _check_classes(cache: LatentCache, folder: ImageFolder) -> LatentCache:
    """Every class needs a readable image, on the first encode and on every reuse of the cache."""
    empty = [name for label, name in enumerate(folder.classes) if not (cache.labels == label).any()]
    if empty:
        split = display_path(folder.root / folder.split)
        raise LatentDistillError(f"class '{display_path(empty[0])}' of {split} has no readable images")
    return cache


def physical_memory() -> int | None:
    """Bytes of memory of this machine, or None where the platform does not tell."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return memory if memory > 0 else None


def _check_memory(folder: ImageFolder, autoencoder, resolution: int) -> None:
    """A run holds every image (uint8) and latent (float32) of a split in memory: refuse, before reading
    any image, a resolution whose cache could never fit, rather than die of memory hours later."""
    if resolution < 1:
        raise LatentDistillError(f"config key 'data.resolution' is {resolution!r}: it must be a positive pixel count")
    needed = len(folder) * 3 * resolution * resolution
    if autoencoder is not None:
        needed += len(folder) * autoencoder.latent_channels * (resolution // autoencoder.downscale) ** 2 * 4
    memory = physical_memory()
    if memory is not None and needed > memory:
        raise LatentDistillError(
            f"config key 'data.resolution' is {resolution}: the {len(folder)} images of "
            f"{display_path(folder.root / folder.split)} at {resolution}x{resolution} need about {_size(needed)} "
            f"({needed} bytes) of memory, more than this machine's {_size(memory)} ({memory} bytes); "
            "lower data.resolution"
        )


def _size(count: int) -> str:
    """Bytes as a short number in decimal units."""
    units = ("bytes", "KB", "MB", "GB", "TB", "PB")
    power = 0
    while power < len(units) - 1 and count >= 1000 ** (power + 1):
        power += 1
    return f"{count} bytes" if power == 0 else f"{count / 1000 ** power:.1f} {units[power]}"


__all__ = ["LatentCache", "encode_dataset", "physical_memory"]
