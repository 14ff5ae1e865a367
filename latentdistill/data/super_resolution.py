"""Super-resolution data: folders of HR images without classes, the standard LR degradation, patches.

Test LR images are made the way the SR literature's figures were: MATLAB-style bicubic downsampling
with antialiasing (PIL's BICUBIC reproduces the published bicubic PSNRs within 0.02 dB), rounded to 8
bits, after cropping the HR image to a multiple of the scale. Training pairs may use torch's
differentiable bicubic (``downsample``), which distillation needs to back-propagate through.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentdistill.data.image_folder import IMAGE_EXTENSIONS, read_rgb
from latentdistill.errors import LatentDistillError
from latentdistill.io import display_path, error_reason


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise LatentDistillError(f"image folder not found: {display_path(folder)}")
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    except OSError as error:
        raise LatentDistillError(f"cannot list folder {display_path(folder)}: {error_reason(error)}") from None
    if not files:
        raise LatentDistillError(f"image folder {display_path(folder)} holds no images ({'|'.join(IMAGE_EXTENSIONS)})")
    return files


def load_hr_images(folders: list[str | Path] | str | Path) -> list[torch.Tensor]:
    """Every image of the folders as a (3, H, W) uint8 tensor, in sorted order (16-bit ones scaled to 8,
    unreadable or oversized ones named in one line by ``read_rgb``)."""
    folders = [folders] if isinstance(folders, (str, Path)) else folders
    images = []
    for folder in folders:
        for path in list_images(folder):
            images.append(torch.from_numpy(np.asarray(read_rgb(path), dtype=np.uint8).copy()).permute(2, 0, 1))
    return images


def modcrop(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right so that height and width are multiples of ``scale``."""
    height, width = image.shape[-2:]
    return image[..., : height - height % scale, : width - width % scale]


def _to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def _from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def bicubic_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL bicubic (antialiased when shrinking) resize of a (3, H, W) uint8 image to (height, width)."""
    return _from_pil(_to_pil(image).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def make_lr(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The standard test degradation: bicubic down by ``scale`` of an HR image already mod-cropped, uint8."""
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise LatentDistillError(f"HR image of {height}x{width} is not a multiple of scale {scale}: modcrop it first")
    return bicubic_resize(hr, (height // scale, width // scale))


def downsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Differentiable bicubic downsampling with antialiasing of float images (N, 3, H, W)."""
    return F.interpolate(images, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)


def extract_patches(images: list[torch.Tensor], size: int, stride: int) -> torch.Tensor:
    """All ``size`` x ``size`` HR patches on a ``stride`` grid of each image (N, 3, size, size), uint8."""
    patches = []
    for image in images:
        height, width = image.shape[-2:]
        if height < size or width < size:
            continue
        windows = image.unfold(1, size, stride).unfold(2, size, stride)  # (3, rows, cols, size, size)
        patches.append(windows.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size))
    if not patches:
        raise LatentDistillError(f"no image is at least {size}x{size}: choose a smaller sr.patch_size")
    return torch.cat(patches).contiguous()


def dihedral(images: torch.Tensor, flip: bool, rotations: int) -> torch.Tensor:
    """One of the 8 flips/90-degree rotations of (..., H, W) images: the SR training augmentation."""
    images = images.flip(-1) if flip else images
    return torch.rot90(images, rotations, dims=(-2, -1))
