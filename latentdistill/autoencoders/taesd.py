"""The TAESD family (taesd, taef1, taef2) built straight from its published encoder/decoder weight files.

The weight files name their tensors by a plain `nn.Sequential` index (`1.conv.0.weight`), so the modules
below keep exactly that layout. The variant is read from the tensors themselves: the number of latent
channels (4, 16 or 32) and, for taef2, the extra `pool` branches.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import LatentDistillError
from .base import Autoencoder

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
# variant -> (latent channels, whether the low-resolution blocks carry a `pool` branch)
VARIANTS = {"taesd": (4, False), "taef1": (16, False), "taef2": (32, True)}
VARIANT_BY_CHANNELS = {channels: name for name, (channels, _) in VARIANTS.items()}
WIDTH = 64


def conv3x3(channels_in: int, channels_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(channels_in, channels_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Softly bounds latents to (-3, 3) so that out-of-range latents cannot blow up the decoder."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Residual block; with `pooled` (taef2) a GroupNorm branch first mixes channel statistics into x."""

    def __init__(self, channels_in: int, channels_out: int, pooled: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            conv3x3(channels_in, channels_out), nn.ReLU(),
            conv3x3(channels_out, channels_out), nn.ReLU(),
            conv3x3(channels_out, channels_out),
        )  # fmt: skip
        same_width = channels_in == channels_out
        self.skip = nn.Identity() if same_width else nn.Conv2d(channels_in, channels_out, 1, bias=False)
        self.fuse = nn.ReLU()
        self.pool = None
        if pooled:
            hidden = 4 * channels_in
            self.pool = nn.Sequential(
                nn.Conv2d(channels_in, hidden, 1, bias=False), nn.GroupNorm(4, hidden), nn.ReLU(),
                nn.Conv2d(hidden, channels_in, 1, bias=False),
            )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def blocks(count: int, pooled: bool = False) -> list[Block]:
    return [Block(WIDTH, WIDTH, pooled) for _ in range(count)]


def downsample() -> nn.Conv2d:
    return conv3x3(WIDTH, WIDTH, stride=2, bias=False)


def upsample() -> list[nn.Module]:
    return [nn.Upsample(scale_factor=2), conv3x3(WIDTH, WIDTH, bias=False)]


def build_encoder(latent_channels: int, pooled: bool) -> nn.Sequential:
    """Images in [0, 1] -> raw latents at 1/8 resolution (tensor names `0.weight` ... `14.bias`)."""
    return nn.Sequential(
        conv3x3(3, WIDTH), *blocks(1),
        downsample(), *blocks(3),
        downsample(), *blocks(3),
        downsample(), *blocks(3, pooled),
        conv3x3(WIDTH, latent_channels),
    )  # fmt: skip


def build_decoder(latent_channels: int, pooled: bool) -> nn.Sequential:
    """Raw latents -> images in roughly [0, 1] at 8x the resolution (tensor names `1.weight` ... `19.bias`)."""
    return nn.Sequential(
        Clamp(), conv3x3(latent_channels, WIDTH), nn.ReLU(),
        *blocks(3, pooled), *upsample(),
        *blocks(3), *upsample(),
        *blocks(3), *upsample(),
        *blocks(1), conv3x3(WIDTH, 3),
    )  # fmt: skip


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a weights file without pickle code execution, as float32 tensors."""
    if not path.is_file():
        raise LatentDistillError(f"weights file not found: {path}")
    if path.suffix not in WEIGHT_SUFFIXES:
        expected = ", ".join(WEIGHT_SUFFIXES)
        raise LatentDistillError(f"weights file {path} has suffix '{path.suffix}', expected one of {expected}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise LatentDistillError(f"could not read weights file {path}: {reason}") from error
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise LatentDistillError(f"weights file {path} does not hold a flat mapping of tensor names to tensors")
    return {name: tensor.to(torch.float32) for name, tensor in state.items()}


def detect_variant(state: dict[str, torch.Tensor], part: str, path: Path) -> str:
    """Tell the variant from the latent-side convolution: its channel count is the latent width."""
    key, dimension = ("14.weight", 0) if part == "encoder" else ("1.weight", 1)
    tensor = state.get(key)
    if tensor is None or tensor.ndim != 4:
        first = next(iter(state), "nothing")
        raise LatentDistillError(f"{path} is not a TAESD {part}: no 4-D tensor '{key}' (first tensor is '{first}')")
    channels = tensor.shape[dimension]
    if channels not in VARIANT_BY_CHANNELS:
        known = ", ".join(f"{name} {count}" for name, (count, _) in VARIANTS.items())
        raise LatentDistillError(
            f"{path}: tensor '{key}' of shape {tuple(tensor.shape)} gives {channels} latent channels, "
            f"which match no TAESD variant ({known})"
        )
    return VARIANT_BY_CHANNELS[channels]


def load_into(module: nn.Module, state: dict[str, torch.Tensor], description: str, path: Path) -> None:
    """Load with a message that names the first missing, misshapen or unexpected tensor."""
    expected = module.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise LatentDistillError(f"{path}: missing tensor '{name}' that a {description} needs")
        if state[name].shape != tensor.shape:
            actual, wanted = tuple(state[name].shape), tuple(tensor.shape)
            raise LatentDistillError(f"{path}: tensor '{name}' has shape {actual}, a {description} expects {wanted}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise LatentDistillError(
            f"{path}: unexpected tensor '{unexpected[0]}' ({len(unexpected)} in all) for a {description}"
        )
    module.load_state_dict(state)


def weight_files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.is_file() and path.suffix in WEIGHT_SUFFIXES]


def find_weights_file(folder: Path, part: str) -> Path:
    """The one `*encoder*` or `*decoder*` weights file of a folder, or a clear error."""
    matches = sorted(path for path in weight_files(folder) if part in path.name.lower())
    if len(matches) != 1:
        found = "none" if not matches else ", ".join(path.name for path in matches)
        raise LatentDistillError(
            f"expected exactly one *{part}*.safetensors|.pth|.pt file in {folder}, found {found}"
        )
    return matches[0]


def has_weights_files(folder: Path) -> bool:
    """Whether a folder looks like a TAESD-family checkpoint (used by `load_autoencoder` auto-detection)."""
    names = [path.name.lower() for path in weight_files(folder)]
    return any("encoder" in name for name in names) and any("decoder" in name for name in names)


class TinyAutoencoderFamily(Autoencoder):
    """TAESD-family autoencoder from weight files: images in [0, 1], raw latents, scaling factor 1."""

    kind = "taesd"

    def __init__(self, variant: str = "taef2", name_or_path: str | None = None, subfolder: str | None = None) -> None:
        if variant not in VARIANTS:
            raise LatentDistillError(f"unknown TAESD variant '{variant}', expected one of {', '.join(VARIANTS)}")
        latent_channels, pooled = VARIANTS[variant]
        super().__init__(latent_channels, name_or_path=name_or_path, subfolder=subfolder, variant=variant)
        self.encoder = build_encoder(latent_channels, pooled)
        self.decoder = build_decoder(latent_channels, pooled)
        self.freeze()

    @classmethod
    def random(cls, variant: str = "taef2", seed: int = 0) -> TinyAutoencoderFamily:
        """A randomly initialised one, for tests and for checking shapes without weights."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(variant)

    @classmethod
    def from_files(
        cls,
        encoder_path: str | os.PathLike,
        decoder_path: str | os.PathLike,
        name_or_path: str | None = None,
        subfolder: str | None = None,
    ) -> TinyAutoencoderFamily:
        """Build the variant that both weight files describe; they must agree on the latent channels."""
        encoder_path, decoder_path = Path(encoder_path), Path(decoder_path)
        encoder_state, decoder_state = read_weights(encoder_path), read_weights(decoder_path)
        variant = detect_variant(encoder_state, "encoder", encoder_path)
        decoder_variant = detect_variant(decoder_state, "decoder", decoder_path)
        if decoder_variant != variant:
            raise LatentDistillError(
                f"encoder {encoder_path} has {VARIANTS[variant][0]} latent channels ({variant}) but decoder "
                f"{decoder_path} has {VARIANTS[decoder_variant][0]} ({decoder_variant})"
            )
        if name_or_path is None and encoder_path.parent == decoder_path.parent:
            name_or_path = str(encoder_path.parent)
        autoencoder = cls(variant, name_or_path=name_or_path, subfolder=subfolder)
        load_into(autoencoder.encoder, encoder_state, f"{variant} encoder", encoder_path)
        load_into(autoencoder.decoder, decoder_state, f"{variant} decoder", decoder_path)
        return autoencoder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, subfolder: str | None = None) -> TinyAutoencoderFamily:
        """Load from a folder holding one `*encoder*` and one `*decoder*` weights file."""
        path = Path(folder) / subfolder if subfolder else Path(folder)
        if not path.is_dir():
            raise LatentDistillError(f"TAESD weights folder not found: {path}")
        encoder_path, decoder_path = find_weights_file(path, "encoder"), find_weights_file(path, "decoder")
        return cls.from_files(encoder_path, decoder_path, name_or_path=str(folder), subfolder=subfolder)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write `encoder.safetensors` and `decoder.safetensors`, loadable by `from_pretrained`."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        metadata = {"format": "pt", "variant": self.variant}
        save_file(self.encoder.state_dict(), path / "encoder.safetensors", metadata=metadata)
        save_file(self.decoder.state_dict(), path / "decoder.safetensors", metadata=metadata)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents).clamp(0, 1)
