"""Latent autoencoders behind one interface: `encode(images in [0, 1]) -> latents`, `decode(latents) -> images`.

`load_autoencoder` accepts what users have: a diffusers hub id, a local diffusers folder, or a folder of
TAESD-family encoder/decoder weight files, and picks the adapter itself unless told.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import LatentDistillError
from ..registry import Registry
from .base import Autoencoder
from .taesd import TinyAutoencoderFamily, has_weights_files

__all__ = ["AUTOENCODERS", "Autoencoder", "TinyAutoencoderFamily", "load_autoencoder"]

# Adapter class by kind (config key autoencoder.kind). The diffusers adapters are imported when first
# used, so the TAESD path (and `import latentdistill`) does not pay for importing diffusers.
AUTOENCODERS = Registry("autoencoder kind", "autoencoder.kind")
AUTOENCODERS.register("taesd", TinyAutoencoderFamily)
AUTOENCODERS.register("kl", "latentdistill.autoencoders.diffusers_models:KLAutoencoder")
AUTOENCODERS.register("tiny", "latentdistill.autoencoders.diffusers_models:TinyDiffusersAutoencoder")
AUTOENCODERS.register("pixels", "latentdistill.autoencoders.pixels:PixelSpace")  # the pixel-space baseline


KIND_BY_CLASS_NAME = {"AutoencoderKL": "kl", "AutoencoderTiny": "tiny"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_autoencoder(
    name_or_path: str, kind: str = "auto", subfolder: str | None = None, device: str | torch.device = "cpu",
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Autoencoder:
    """Load a frozen autoencoder by hub id or local folder.

    `kind`: auto (detect), taesd (encoder/decoder weight files), kl (AutoencoderKL), tiny (AutoencoderTiny), or
    pixels (no autoencoder: the latents are the images normalised with `normalization`, the data's mean and std).
    """
    if kind == "pixels":
        if normalization and any(isinstance(values, str) for values in normalization):
            raise LatentDistillError("config key 'data.mean': autoencoder.kind pixels normalises the images into its "
                                     "latents as the cache is built, before 'auto' statistics exist: name them "
                                     "(data.mean=cifar10 data.std=cifar10) or give 3 numbers each")
        statistics = dict(zip(("mean", "std"), normalization)) if normalization else {}
        return AUTOENCODERS.get(kind).from_pretrained(name_or_path, subfolder, **statistics).to(device)
    if kind == "auto":
        kind = detect_kind(str(name_or_path), subfolder)
    return AUTOENCODERS.get(kind).from_pretrained(name_or_path, subfolder=subfolder).to(device)


def detect_kind(name_or_path: str, subfolder: str | None) -> str:
    """Read the kind from a local folder's contents, or from a hub repository's `config.json`."""
    root = Path(name_or_path)
    if root.exists():
        folder = root / subfolder if subfolder else root
        if not folder.is_dir():
            raise LatentDistillError(f"autoencoder path {folder} is not a folder")
        config_path = folder / "config.json"
        if config_path.is_file():
            return kind_from_config(config_path)
        if has_weights_files(folder):
            return "taesd"
        raise LatentDistillError(
            f"autoencoder folder {folder} holds neither a diffusers config.json nor *encoder*/*decoder* weight files"
        )
    if not HUB_ID.match(name_or_path):
        raise LatentDistillError(f"autoencoder path does not exist: {name_or_path}")
    from huggingface_hub import hf_hub_download

    try:
        config_path = hf_hub_download(name_or_path, "config.json", subfolder=subfolder)
    except (OSError, ValueError) as error:
        raise LatentDistillError(
            f"autoencoder '{name_or_path}' is not a local path and its config.json could not be resolved "
            f"from the Hugging Face hub or its cache (offline or missing: {type(error).__name__}); pass a local folder"
        ) from error
    return kind_from_config(Path(config_path))


def kind_from_config(config_path: Path) -> str:
    """Map a diffusers config's `_class_name` to an adapter kind."""
    try:
        class_name = json.loads(config_path.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as error:
        raise LatentDistillError(f"could not read a JSON object from {config_path}: {error}") from error
    if class_name not in KIND_BY_CLASS_NAME:
        raise LatentDistillError(
            f"{config_path} describes a '{class_name}', expected one of {', '.join(KIND_BY_CLASS_NAME)}"
        )
    return KIND_BY_CLASS_NAME[class_name]
